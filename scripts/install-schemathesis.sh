#!/usr/bin/env bash
# Makes sure the pinned Schemathesis (API fuzzer driven by the OpenAPI spec) is installed in
# its own venv, .tools/schemathesis, and prints the path of its `schemathesis` executable.
# Registry access (PyPI) happens only here; the fuzz test itself talks to 127.0.0.1 only.
set -euo pipefail
EQ_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/pip-tool.sh
source "$EQ_ROOT/scripts/lib/pip-tool.sh"
eq_pip_tool schemathesis 4.32.5 schemathesis schemathesis
