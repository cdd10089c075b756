#!/usr/bin/env bash
# Installs what the example Pi publisher (deploy/devices/pi_publisher.py) needs — the pinned
# nats-py and nkeys from PyPI — into .tools/venv, and prints that venv's python.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.tools/venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >&2
if ! "$VENV/bin/python" -c "import nats, nkeys" >/dev/null 2>&1; then
  echo "installing the device example's requirements into $VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/deploy/devices/requirements.txt" >&2
fi
echo "$VENV/bin/python"
