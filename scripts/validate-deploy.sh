#!/usr/bin/env bash
# Validates everything under deploy/ offline, with the tools scripts/install-deploy-validate.sh
# installs (nothing is downloaded here):
#
#   deploy/Dockerfile        hadolint; and: the Rust image is new enough for the workspace's
#                            rust-version, the build is --locked, the runtime runs as non-root
#   .dockerignore            excludes target/ and keeps everything the build needs
#   deploy/compose/          `docker compose config` (the real Compose v2 parser) of
#                            compose.yaml and of it with green.yaml, and the compose-spec
#                            JSON schema; `nats-server -t` on every mounted NATS
#                            config; and: every bind-mounted file exists, every node has all
#                            NATS servers, a unique EQ_NODE_ID, its key file on a mounted volume,
#                            a /readyz health check and a long enough stop grace period;
#                            Prometheus scrapes every node; Grafana's provisioning finds the
#                            dashboard and the datasource
#   deploy/k8s/              every manifest against the Kubernetes schemas (strict, versions
#                            below), every kustomization rendered by kubectl's kustomize and
#                            validated again; and: probes, preStop, grace period, non-root,
#                            read-only root, resources; Services and the PDB select pods; the
#                            blue and green pod specs equal base's; no Secret is committed and
#                            every Secret used is documented
#   deploy/grafana/          the dashboard parses, every panel has a description, every query
#                            parses as PromQL and names only metrics the code exports
#                            (metrics::counter!/gauge!/histogram! in node/ and actors/)
#
# Exit 0 when all pass; otherwise every failure is listed and the exit code is 1 (2: tools
# missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.tools/deploy-validate"
NATS_SERVER="${EQ_NATS_SERVER:-$ROOT/.tools/venv/bin/nats-server}"
# The oldest Kubernetes still commonly run and the newest the schemas cover.
K8S_VERSIONS=(1.30.0 1.37.0)
cd "$ROOT"

for tool in kubernetes-validate kubectl check-jsonschema hadolint docker-compose python; do
  if [ ! -x "$VENV/bin/$tool" ]; then
    echo "missing $VENV/bin/$tool: run scripts/install-deploy-validate.sh first" >&2
    exit 2
  fi
done
[ -x "$NATS_SERVER" ] || { echo "no nats-server at $NATS_SERVER: run scripts/install-nats-server.sh" >&2; exit 2; }

# Compose reads these from the environment; none of them may change what is validated.
unset COMPOSE_FILE COMPOSE_PROFILES COMPOSE_PROJECT_NAME COMPOSE_ENV_FILES DOCKER_HOST DOCKER_CONTEXT

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
FAILED=()
fail() { FAILED+=("$1"); echo "FAIL: $1"; }

echo "== hadolint $("$VENV/bin/hadolint" --version | awk '{print $NF}') deploy/Dockerfile"
"$VENV/bin/hadolint" --no-color deploy/Dockerfile || fail "hadolint deploy/Dockerfile"

COMPOSE=deploy/compose/compose.yaml
GREEN=deploy/compose/green.yaml
echo "== docker compose config ($("$VENV/bin/docker-compose" version --short)) $COMPOSE, and with $GREEN"
"$VENV/bin/docker-compose" -f "$COMPOSE" config --quiet || fail "docker compose config $COMPOSE"
# The semantic checks read the merged, normalised model (both files: blue and green nodes).
if ! "$VENV/bin/docker-compose" -f "$COMPOSE" -f "$GREEN" config --format json > "$WORK/compose.json"; then
  fail "docker compose config $COMPOSE + $GREEN"
  echo '{}' > "$WORK/compose.json"
fi
echo "== compose-spec schema (check-jsonschema) $COMPOSE $GREEN"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$COMPOSE" "$GREEN" \
  || fail "compose-spec schema"

# Plain manifests: every YAML under deploy/k8s except the kustomizations.
mapfile -t MANIFESTS < <(find deploy/k8s -name '*.yaml' ! -name kustomization.yaml | sort)
mapfile -t LAYOUTS < <(find deploy/k8s -name kustomization.yaml -printf '%h\n' | sort)
for version in "${K8S_VERSIONS[@]}"; do
  echo "== kubernetes-validate --strict, Kubernetes $version: ${#MANIFESTS[@]} manifests"
  out="$("$VENV/bin/kubernetes-validate" --strict -k "$version" "${MANIFESTS[@]}" 2>&1)" || true
  # A missing schema (a mistyped apiVersion or kind) is only a warning to the tool: not here.
  if grep -E '^(WARN|ERROR)' <<<"$out"; then fail "kubernetes-validate (Kubernetes $version)"; fi
done
for layout in "${LAYOUTS[@]}"; do
  name="$(basename "$layout")"
  echo "== kustomize $layout"
  if "$VENV/bin/kubectl" kustomize "$layout" > "$WORK/k8s-$name.yaml" 2> "$WORK/kustomize.err"; then
    out="$("$VENV/bin/kubernetes-validate" --strict -k "${K8S_VERSIONS[-1]}" "$WORK/k8s-$name.yaml" 2>&1)" || true
    if grep -E '^(WARN|ERROR)' <<<"$out"; then fail "kubernetes-validate of rendered $layout"; fi
    grep -c '^kind:' "$WORK/k8s-$name.yaml" | sed 's/^/   resources: /'
  else
    cat "$WORK/kustomize.err"
    fail "kustomize $layout"
    rm -f "$WORK/k8s-$name.yaml"
  fi
done

echo "== semantic checks (Dockerfile, compose, NATS configs, Prometheus, Grafana, Kubernetes)"
"$VENV/bin/python" - "$ROOT" "$WORK" "$NATS_SERVER" <<'PY' || fail "semantic checks"
import glob, json, os, re, subprocess, sys
import yaml
import promql_parser

ROOT, WORK, NATS_SERVER = sys.argv[1:4]
errors = []

def err(where, message):
    errors.append(f"{where}: {message}")

def rel(path):
    return os.path.relpath(path, ROOT)

def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()

def go_seconds(text):
    """Seconds of a Go/compose duration such as 1m0s, 30s, 1m30s."""
    total, matched = 0.0, False
    for value, unit in re.findall(r"([\d.]+)(h|ms|m|s)", str(text)):
        matched = True
        total += float(value) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total if matched else None

def version_tuple(text):
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])

# ---------------------------------------------------------------- Dockerfile
cargo = read("Cargo.toml")
rust_version = re.search(r'^rust-version\s*=\s*"([^"]+)"', cargo, re.M).group(1)
members = json.loads(re.search(r"^members\s*=\s*(\[[^\]]*\])", cargo, re.M).group(1))
dockerfile = re.sub(r"\\\n", " ", read("deploy/Dockerfile"))
instructions = [l.strip() for l in dockerfile.splitlines() if l.strip() and not l.strip().startswith("#")]
froms = [l for l in instructions if l.upper().startswith("FROM ")]
where = "deploy/Dockerfile"
if len(froms) < 2:
    err(where, "expected a multi-stage build (a Rust build stage and a slim runtime stage)")
else:
    m = re.match(r"FROM\s+rust:(\d+\.\d+)", froms[0], re.I)
    if not m:
        err(where, f"the first stage should build FROM rust:<version>: {froms[0]}")
    elif version_tuple(m.group(1)) < version_tuple(rust_version):
        err(where, f"rust:{m.group(1)} is older than the workspace's rust-version {rust_version}")
    if "rust:" in froms[-1]:
        err(where, "the runtime stage must not be the Rust image")
build_runs = [l for l in instructions if l.upper().startswith("RUN ") and "cargo build" in l]
if not any("--release" in l and "--locked" in l and "--bin equipment-live" in l for l in build_runs):
    err(where, "no `cargo build --release --locked --bin equipment-live`")
if not any("--mount=type=cache" in l for l in build_runs):
    err(where, "the cargo build uses no cache mounts")
runtime = instructions[instructions.index(froms[-1]):] if froms else []
users = [l.split(None, 1)[1] for l in runtime if l.upper().startswith("USER ")]
if not users or users[-1].split(":")[0] in ("0", "root"):
    err(where, "the runtime stage must end on a non-root USER")
for want in ('ENTRYPOINT ["equipment-live"]', 'CMD ["run"]', "EXPOSE 8080"):
    if want not in runtime:
        err(where, f"the runtime stage lacks `{want}`")
copies = [l for l in runtime if l.upper().startswith("COPY")]
if any("--from" not in l for l in copies) or len(copies) != 1:
    err(where, "the runtime stage should copy exactly one thing, the binary, from the build stage")

ignore = [l.strip() for l in read(".dockerignore").splitlines() if l.strip() and not l.startswith("#")]
ignored = {l.strip("/") for l in ignore if not l.startswith("!")}
if "target" not in ignored:
    err(".dockerignore", "must exclude target/")
for needed in ["Cargo.toml", "Cargo.lock"] + members:
    if needed in ignored or "*" in ignored:
        err(".dockerignore", f"excludes {needed}, which the build needs")

# ---------------------------------------------------------------- compose
where = "deploy/compose/compose.yaml"
compose = json.load(open(os.path.join(WORK, "compose.json")))
services = compose.get("services", {})
if not services:
    err(where, "no services (docker compose config failed?)")

def binds(service):
    return [v for v in services[service].get("volumes", []) if v.get("type") == "bind"]

def env(service):
    return services[service].get("environment") or {}

for name, svc in services.items():
    for volume in binds(name):
        if not os.path.exists(volume["source"]):
            err(where, f"service {name} mounts {rel(volume['source'])}, which does not exist")
    build = svc.get("build")
    if build:
        context = build.get("context", "")
        if not os.path.isdir(context):
            err(where, f"service {name}: build context {context} does not exist")
        elif not os.path.isfile(os.path.join(context, build.get("dockerfile", "Dockerfile"))):
            err(where, f"service {name}: {build.get('dockerfile')} not found in its build context")

nats = sorted(n for n, s in services.items() if str(s.get("image", "")).startswith("nats:"))
nodes = sorted(n for n in services if "EQ_NODE_ID" in env(n))
if len(nats) < 3:
    err(where, f"expected a three-server NATS cluster, found {nats}")
for n in nats:
    tag = services[n]["image"].split(":", 1)[1]
    if version_tuple(tag) < (2, 12):
        err(where, f"{n}: nats {tag} is older than 2.12")
    confs = [v["source"] for v in binds(n) if v["source"].endswith(".conf")]
    if len(confs) != 1:
        err(where, f"{n}: expected one mounted nats-server config, found {len(confs)}")
        continue
    if not os.path.isfile(confs[0]):
        continue  # reported above
    check = subprocess.run([NATS_SERVER, "-t", "-c", confs[0]], capture_output=True, text=True)
    if check.returncode != 0:
        err(rel(confs[0]), f"nats-server -t: {check.stderr.strip() or check.stdout.strip()}")
    text = open(confs[0]).read()
    server_name = re.search(r"^\s*server_name:\s*(\S+)", text, re.M)
    if not server_name or server_name.group(1) != n:
        err(rel(confs[0]), f"server_name should be the compose service name {n}")
    for host in re.findall(r"nats-route://([^:\s]+):", text):
        if host not in services:
            err(rel(confs[0]), f"route to {host}, which is not a compose service")
    if not re.search(r"^\s*http:\s*0\.0\.0\.0:8222", text, re.M):
        err(rel(confs[0]), "monitoring (http: 0.0.0.0:8222) is not enabled")

if len(nodes) < 3:
    err(where, f"expected three Equipment Live nodes, found {nodes}")
node_ids = [env(n)["EQ_NODE_ID"] for n in nodes]
if len(set(node_ids)) != len(node_ids):
    err(where, f"EQ_NODE_ID values are not unique: {node_ids}")
for n in nodes:
    e, svc = env(n), services[n]
    urls = e.get("EQ_NATS_URL", "")
    hosts = sorted(re.findall(r"nats://([^:,/]+)", urls))
    if hosts != nats:
        err(where, f"{n}: EQ_NATS_URL should list every NATS server {nats}, lists {hosts}")
    if e.get("EQ_REPLICAS") != "3":
        err(where, f"{n}: EQ_REPLICAS should be 3 on a three-server cluster")
    if e.get("EQ_LOG_FORMAT") != "json":
        err(where, f"{n}: EQ_LOG_FORMAT should be json")
    key = e.get("EQ_AUTH_KEY_FILE", "")
    targets = [v["target"] for v in svc.get("volumes", [])]
    if not key or not any(key.startswith(t.rstrip("/") + "/") for t in targets):
        err(where, f"{n}: EQ_AUTH_KEY_FILE {key!r} is not on a mounted volume")
    command = " ".join(svc.get("entrypoint") or []) + " ".join(svc.get("command") or [])
    db = e.get("DATABASE_URL", "") + command
    db_hosts = re.findall(r"postgres://[^@]*@([^:/\s\"]+)", db)
    if not db_hosts or any(h not in services for h in db_hosts):
        err(where, f"{n}: DATABASE_URL should point at a PostgreSQL compose service ({db_hosts})")
    health = " ".join(svc.get("healthcheck", {}).get("test", []))
    if "/readyz" not in health:
        err(where, f"{n}: the health check should probe /readyz")
    grace = go_seconds(svc.get("stop_grace_period", "10s"))
    if grace is None or grace < 30:
        err(where, f"{n}: stop_grace_period {svc.get('stop_grace_period')} is too short for a drain")
    if svc.get("stop_signal", "SIGTERM") != "SIGTERM":
        err(where, f"{n}: the drain signal is SIGTERM")
    for dep in ["init"] + nats:
        if dep not in (svc.get("depends_on") or {}):
            err(where, f"{n}: should depend on {dep}")

def published(service):
    return {str(p.get("published")) for p in services.get(service, {}).get("ports", [])}

for service, port in (("node-1", "8080"), ("green-1", "8081"), ("grafana", "3000"), ("prometheus", "9090")):
    if port not in published(service):
        err(where, f"{service} should publish port {port}")

prometheus = [n for n, s in services.items() if str(s.get("image", "")).startswith("prom/prometheus")]
if len(prometheus) != 1:
    err(where, "expected one Prometheus service")
else:
    confs = [v["source"] for v in binds(prometheus[0]) if v["target"].endswith("prometheus.yml")]
    if not confs or not os.path.isfile(confs[0]):
        err(where, "Prometheus has no mounted prometheus.yml")
    else:
        config = yaml.safe_load(open(confs[0]))
        scraped = set()
        for job in config.get("scrape_configs", []):
            for static in job.get("static_configs", []):
                for target in static.get("targets", []):
                    host, _, port = target.partition(":")
                    if host not in services:
                        err(rel(confs[0]), f"target {target}: no such compose service")
                    elif host in nodes and port != env(host).get("EQ_HTTP_ADDR", "").rpartition(":")[2]:
                        err(rel(confs[0]), f"target {target}: the node listens on {env(host).get('EQ_HTTP_ADDR')}")
                    scraped.add(host)
        for n in nodes:
            if n not in scraped:
                err(rel(confs[0]), f"node {n} is not scraped")

grafana = [n for n, s in services.items() if "grafana" in str(s.get("image", ""))]
dashboard_path = os.path.join(ROOT, "deploy/grafana/equipment-live.json")
if len(grafana) != 1:
    err(where, "expected one Grafana service")
else:
    mounts = binds(grafana[0])
    provisioning = [v for v in mounts if v["target"] == "/etc/grafana/provisioning"]
    dashboards = [v for v in mounts if v["source"].endswith(".json")]
    if not provisioning:
        err(where, "Grafana: deploy/grafana/provisioning is not mounted at /etc/grafana/provisioning")
    if not any(os.path.samefile(v["source"], dashboard_path) for v in dashboards if os.path.exists(v["source"])):
        err(where, "Grafana: deploy/grafana/equipment-live.json is not mounted")
    if provisioning and os.path.isdir(provisioning[0]["source"]):
        base = provisioning[0]["source"]
        uids = set()
        for path in sorted(glob.glob(os.path.join(base, "datasources", "*.y*ml"))):
            for ds in yaml.safe_load(open(path)).get("datasources", []):
                uids.add(ds.get("uid"))
                host = re.match(r"https?://([^:/]+)", ds.get("url", ""))
                if ds.get("type") != "prometheus" or not host or host.group(1) not in services:
                    err(rel(path), f"datasource {ds.get('name')} should be Prometheus at a compose service")
        if not uids:
            err("deploy/grafana/provisioning", "no datasource provisioned")
        dashboard_dirs = {os.path.dirname(v["target"]) for v in dashboards}
        providers = []
        for path in sorted(glob.glob(os.path.join(base, "dashboards", "*.y*ml"))):
            for provider in yaml.safe_load(open(path)).get("providers", []):
                providers.append(provider)
                if provider.get("options", {}).get("path") not in dashboard_dirs:
                    err(rel(path), f"provider path {provider.get('options', {}).get('path')} is not where "
                                   f"compose mounts the dashboard ({sorted(dashboard_dirs)})")
        if not providers:
            err("deploy/grafana/provisioning", "no dashboard provider")

# ---------------------------------------------------------------- Grafana dashboard
where = "deploy/grafana/equipment-live.json"
exported, histograms = set(), set()
for path in glob.glob(os.path.join(ROOT, "node/src/**/*.rs"), recursive=True) + \
        glob.glob(os.path.join(ROOT, "actors/src/**/*.rs"), recursive=True):
    if path.endswith("tests.rs") or "/tests/" in path:
        continue
    for kind, name in re.findall(r"metrics::(counter|gauge|histogram)!\(\s*\"(eq_[a-z0-9_]+)\"", open(path).read()):
        exported.add(name)
        if kind == "histogram":
            histograms.add(name)
allowed = exported | {h + s for h in histograms for s in ("_bucket", "_sum", "_count")}

def metrics_of(expr, where):
    # Grafana's variables are not PromQL: give them stand-in values before parsing.
    text = re.sub(r"\$__(rate_)?interval|\$__range", "5m", expr)
    text = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?\}?", "x", text)
    try:
        ast = promql_parser.parse(text)
    except ValueError as e:
        err(where, f"query does not parse ({e}): {expr}")
        return []
    names = []
    promql_parser.walk(ast, lambda node: names.append(node.name) if isinstance(node, promql_parser.VectorSelector) else None)
    return names

try:
    dash = json.load(open(dashboard_path))
except (OSError, ValueError) as e:
    err(where, f"not valid JSON: {e}")
    dash = {}
if dash:
    if not 36 <= dash.get("schemaVersion", 0) <= 41:
        err(where, f"schemaVersion {dash.get('schemaVersion')}: expected 36-41 (Grafana 9-12)")
    for field in ("uid", "title"):
        if not dash.get(field):
            err(where, f"no {field}")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds_vars = {n for n, v in variables.items() if v.get("type") == "datasource" and v.get("query") == "prometheus"}
    if not ds_vars:
        err(where, "no Prometheus datasource variable")
    refs = {f"${{{n}}}" for n in ds_vars} | {f"${n}" for n in ds_vars}
    for name, var in variables.items():
        if var.get("type") == "query":
            query = var.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            m = re.match(r"label_values\((.*),\s*\w+\)$", query or "")
            for metric in metrics_of(m.group(1) if m else (query or ""), f"{where} variable {name}"):
                if metric not in allowed:
                    err(where, f"variable {name} uses {metric}, which the nodes do not export")
    ids, rows, boxes = set(), [], []
    for panel in dash.get("panels", []):
        title = panel.get("title", "?")
        pid = panel.get("id")
        if pid in ids:
            err(where, f"panel id {pid} used twice")
        ids.add(pid)
        grid = panel.get("gridPos", {})
        if not all(k in grid for k in "hwxy") or grid["x"] + grid["w"] > 24:
            err(where, f"panel {title!r}: bad gridPos {grid}")
        else:
            box = (grid["x"], grid["y"], grid["x"] + grid["w"], grid["y"] + grid["h"])
            for other_title, other in boxes:
                if box[0] < other[2] and other[0] < box[2] and box[1] < other[3] and other[1] < box[3]:
                    err(where, f"panels {other_title!r} and {title!r} overlap")
            boxes.append((title, box))
        if panel.get("type") == "row":
            rows.append(title)
            continue
        if len(panel.get("description", "")) < 40:
            err(where, f"panel {title!r} needs a description saying how to read it")
        if panel.get("datasource", {}).get("uid") not in refs:
            err(where, f"panel {title!r}: datasource should be the variable {sorted(refs)}")
        targets = panel.get("targets", [])
        if not targets:
            err(where, f"panel {title!r} has no query")
        for target in targets:
            if target.get("datasource", {}).get("uid") not in refs:
                err(where, f"panel {title!r} query {target.get('refId')}: datasource should be {sorted(refs)}")
            names = metrics_of(target.get("expr", ""), f"{where} panel {title!r}")
            if not names:
                err(where, f"panel {title!r} query {target.get('refId')} names no metric")
            for metric in names:
                if metric not in allowed:
                    err(where, f"panel {title!r} uses {metric}, which the nodes do not export "
                               f"(not in metrics::counter!/gauge!/histogram! under node/ or actors/)")
    want_rows = ["Floor", "Commands", "Cluster", "History & ingest", "Rejects & auth", "Live"]
    if rows != want_rows:
        err(where, f"rows {rows}, expected {want_rows}")

# ---------------------------------------------------------------- Kubernetes
def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]

docs_text = ""
for doc in ("docs/OPERATIONS.md", "deploy/k8s/README.md"):
    if os.path.exists(os.path.join(ROOT, doc)):
        docs_text += read(doc)

for path in sorted(glob.glob(os.path.join(ROOT, "deploy/**/*.y*ml"), recursive=True)):
    for resource in load_all(path):
        if isinstance(resource, dict) and resource.get("kind") == "Secret":
            err(rel(path), "a Secret is committed: create it with kubectl instead (and document how)")

def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())

def check_pod_template(where, deployment, configmaps):
    name = deployment["metadata"]["name"]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    if not labels_match(spec["selector"].get("matchLabels", {}), spec["template"]["metadata"].get("labels", {})):
        err(where, f"{name}: selector does not match the pod labels")
    if pod.get("terminationGracePeriodSeconds", 30) < 60:
        err(where, f"{name}: terminationGracePeriodSeconds should be >= 60 (preStop + drain)")
    security = pod.get("securityContext", {})
    if not security.get("runAsNonRoot") or security.get("runAsUser", 0) == 0:
        err(where, f"{name}: pods must run as non-root")
    mounts_ok = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod["containers"]:
        cname = f"{name}/{c['name']}"
        ports = {p.get("name") for p in c.get("ports", [])} | {p.get("containerPort") for p in c.get("ports", [])}
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            http = c.get(probe, {}).get("httpGet", {})
            if http.get("path") != path:
                err(where, f"{cname}: {probe} should GET {path}")
            if http.get("port") not in ports:
                err(where, f"{cname}: {probe} port {http.get('port')} is not a container port")
        if not c.get("lifecycle", {}).get("preStop"):
            err(where, f"{cname}: needs a preStop hook (endpoints go before the drain starts)")
        if not c.get("securityContext", {}).get("readOnlyRootFilesystem"):
            err(where, f"{cname}: readOnlyRootFilesystem should be true")
        resources = c.get("resources", {})
        if not resources.get("requests") or not resources.get("limits"):
            err(where, f"{cname}: needs resource requests and limits")
        for mount in c.get("volumeMounts", []):
            if mount["name"] not in mounts_ok:
                err(where, f"{cname}: mounts undefined volume {mount['name']}")
        settings = {}
        for source in c.get("envFrom", []):
            ref = source.get("configMapRef", {}).get("name")
            if ref:
                if ref not in configmaps:
                    err(where, f"{cname}: ConfigMap {ref} is not in this layout")
                else:
                    settings.update(configmaps[ref].get("data", {}))
        for var in c.get("env", []):
            if "value" in var:
                settings[var["name"]] = var["value"]
            secret = var.get("valueFrom", {}).get("secretKeyRef")
            if secret and secret["name"] not in docs_text:
                err(where, f"{cname}: Secret {secret['name']} is not documented (docs/OPERATIONS.md, deploy/k8s/README.md)")
        secret_dirs = [m["mountPath"] for m in c.get("volumeMounts", [])
                       if "secret" in mounts_ok.get(m["name"], {})]
        for key in filter(None, settings.get("EQ_AUTH_KEY_FILE", "").split(",")):
            if not any(key.startswith(d.rstrip("/") + "/") for d in secret_dirs):
                err(where, f"{cname}: EQ_AUTH_KEY_FILE {key} is not in a mounted Secret")
        if "DATABASE_URL" not in {v["name"] for v in c.get("env", [])} | set(settings):
            err(where, f"{cname}: no DATABASE_URL")
    for volume in pod.get("volumes", []):
        secret = volume.get("secret", {}).get("secretName")
        if secret and secret not in docs_text:
            err(where, f"{name}: Secret {secret} is not documented (docs/OPERATIONS.md, deploy/k8s/README.md)")

def strip_track(template):
    template = json.loads(json.dumps(template))
    template["metadata"].get("labels", {}).pop("track", None)
    return template

base_template = None
for rendered in sorted(glob.glob(os.path.join(WORK, "k8s-*.yaml"))):
    layout = "deploy/k8s/" + os.path.basename(rendered)[4:-5]
    resources = load_all(rendered)
    by_kind = {}
    for r in resources:
        by_kind.setdefault(r["kind"], []).append(r)
    configmaps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    deployments = by_kind.get("Deployment", [])
    for d in deployments:
        check_pod_template(layout, d, configmaps)
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments]
    for service in by_kind.get("Service", []):
        selected = [l for l in pod_labels if labels_match(service["spec"].get("selector", {}), l)]
        if deployments and not selected:
            err(layout, f"Service {service['metadata']['name']} selects no pods")
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort")
            if isinstance(target, str) and not all(
                    any(p.get("name") == target for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", []))
                    for d in deployments if labels_match(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])):
                err(layout, f"Service {service['metadata']['name']}: no container port named {target}")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if deployments and not any(labels_match(pdb["spec"]["selector"].get("matchLabels", {}), l) for l in pod_labels):
            err(layout, f"PodDisruptionBudget {pdb['metadata']['name']} selects no pods")
    if layout.endswith("/base") and deployments:
        base_template = deployments[0]["spec"]["template"]
    if layout.endswith("/rolling"):
        for d in deployments:
            rolling = d["spec"].get("strategy", {}).get("rollingUpdate", {})
            if d["spec"].get("strategy", {}).get("type") != "RollingUpdate" or \
                    rolling.get("maxUnavailable") != 0 or rolling.get("maxSurge") != 1:
                err(layout, f"{d['metadata']['name']}: expected RollingUpdate with maxUnavailable 0, maxSurge 1")
    if layout.endswith("/blue-green"):
        tracks = {d["spec"]["template"]["metadata"]["labels"].get("track"): d for d in deployments}
        if set(tracks) != {"blue", "green"}:
            err(layout, f"expected Deployments on tracks blue and green, found {sorted(map(str, tracks))}")
        for service in by_kind.get("Service", []):
            if service["spec"].get("selector", {}).get("track") not in ("blue", "green"):
                err(layout, f"Service {service['metadata']['name']} must select one track")
        for track, d in tracks.items():
            if base_template is not None and strip_track(d["spec"]["template"]) != base_template:
                err(layout, f"the {track} pod template differs from deploy/k8s/base/deployment.yaml "
                            f"(apart from the track label): keep them the same")

if errors:
    for e in dict.fromkeys(errors):
        print("  " + e)
    sys.exit(1)
print(f"   ok: {len(services)} compose services, {len(exported)} exported metrics, "
      f"{sum(1 for p in dash.get('panels', []) if p.get('type') != 'row')} dashboard panels")
PY

if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "deploy validation FAILED: ${FAILED[*]}"
  exit 1
fi
echo "deploy validation passed"
