# shellcheck shell=bash
# eq_pip_tool PACKAGE VERSION VENV_NAME EXECUTABLE: makes sure PACKAGE==VERSION is installed
# in its own venv, $EQ_ROOT/.tools/VENV_NAME, and prints the path of its EXECUTABLE.
# Idempotent: does nothing when the pinned version is already there. PyPI is used only
# here, at install time. The caller sets EQ_ROOT (the repository's root).

# _eq_pip_version VENV PACKAGE: the package's installed version, or nothing.
_eq_pip_version() {
  "$1/bin/python" -c "import importlib.metadata as m; print(m.version('$2'))" 2>/dev/null || true
}

eq_pip_tool() {
  local package="$1" pinned="$2" venv="${EQ_ROOT:?EQ_ROOT must be set}/.tools/$3"
  local bin="$venv/bin/$4"
  if [ -x "$bin" ] && [ "$(_eq_pip_version "$venv" "$package")" = "$pinned" ]; then
    echo "$bin"
    return 0
  fi
  echo "installing $package $pinned (PyPI) into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$package==$pinned" >&2
  [ "$(_eq_pip_version "$venv" "$package")" = "$pinned" ] || { echo "$package install failed" >&2; return 1; }
  echo "$bin"
}
