#!/usr/bin/env bash
# Makes sure the TypeScript client's tools (openapi/ts-client: @hey-api/openapi-ts, typescript)
# are installed, exactly as pinned in its package-lock.json: runs `npm ci` when node_modules is
# missing or was installed from another lock file, otherwise does nothing. The registry is only
# used here; generating, building and testing the client later downloads nothing.
# Prints the client's directory.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/openapi/ts-client"
STAMP="$DIR/node_modules/.eq-installed-lock.sha256"

command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || {
  echo "node and npm are needed (Node.js 20.19+; scripts/install-browser.sh installs nodejs)" >&2
  exit 1
}
node -e '
  const [major, minor] = process.versions.node.split(".").map(Number);
  if (major < 20 || (major === 20 && minor < 19)) {
    console.error(`Node.js ${process.versions.node} is too old: @hey-api/openapi-ts needs 20.19+`);
    process.exit(1);
  }
'

want="$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ] || [ ! -x "$DIR/node_modules/.bin/openapi-ts" ] || [ ! -x "$DIR/node_modules/.bin/tsc" ]; then
  echo "installing the TypeScript client's tools (npm ci in $DIR)" >&2
  (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$want" > "$STAMP"
fi
echo "$DIR"
