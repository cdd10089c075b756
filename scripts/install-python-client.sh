#!/usr/bin/env bash
# Makes sure the pinned openapi-python-client (a client generator the project does not use
# for its own tablets) is installed in its own venv, .tools/python-client, and prints the
# path of its `openapi-python-client` executable. The venv also holds what the generated
# client imports (httpx, attrs). Registry access (PyPI) happens only here.
set -euo pipefail
EQ_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/pip-tool.sh
source "$EQ_ROOT/scripts/lib/pip-tool.sh"
eq_pip_tool openapi-python-client 0.29.1 python-client openapi-python-client
