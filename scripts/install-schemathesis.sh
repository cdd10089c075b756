#!/usr/bin/env bash
# Makes sure the pinned Schemathesis (API fuzzer driven by the OpenAPI spec) is installed in
# its own venv, .tools/schemathesis, and prints the path of its `schemathesis` executable.
# Idempotent: does nothing when the pinned version is already there. Registry access (PyPI)
# happens only here, at install time; the fuzz test itself talks to 127.0.0.1 only.
set -euo pipefail
PINNED="4.32.5"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.tools/schemathesis"
BIN="$VENV/bin/schemathesis"

installed_version() {
  "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null
}

if [ -x "$BIN" ] && [ "$(installed_version || true)" = "$PINNED" ]; then
  echo "$BIN"
  exit 0
fi

echo "installing schemathesis $PINNED (PyPI) into $VENV" >&2
python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$PINNED" >&2
[ "$(installed_version || true)" = "$PINNED" ] || { echo "schemathesis install failed" >&2; exit 1; }
echo "$BIN"
