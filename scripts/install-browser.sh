#!/usr/bin/env bash
# Makes sure the floor board's browser test can run: Node.js (20+) and Debian's chromium
# package, installed with apt when missing (no browser download of a test tool's own).
# Prints the chromium path.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  echo "installing ${missing[*]} with apt-get" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi
command -v chromium
