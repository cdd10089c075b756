#!/bin/sh
# One-shot init of the compose rig's secrets (run by the `init` service as root, in the
# equipment-live image). Generates on first start, keeps afterwards (PostgreSQL's data
# directory was initialised with the password of the first start):
#
#   /secrets/node/token.key            API token signing key (48 random bytes, base64)
#   /secrets/node/postgres.password    for the nodes' DATABASE_URL
#   /secrets/postgres/password         the same, for the postgres image (POSTGRES_PASSWORD_FILE)
#   /secrets/grafana/admin.password    Grafana's admin password
#
# and on every start a fresh admin API token, /secrets/node/admin.token (12 hours).
# Each directory is a named volume that only its service mounts.
set -eu
umask 077
NODE_UID=10001      # the `equipment` user of deploy/Dockerfile
POSTGRES_UID=70     # the `postgres` user of the postgres:*-alpine image
GRAFANA_UID=472     # the `grafana` user of the grafana image

# Hex: safe in a URL and in every config syntax.
random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

if [ ! -s /secrets/node/token.key ]; then
  head -c 48 /dev/urandom | base64 -w0 > /secrets/node/token.key
  echo "init: generated the API token key"
fi
if [ ! -s /secrets/postgres/password ]; then
  random_hex 24 > /secrets/postgres/password
  echo "init: generated the PostgreSQL password"
fi
if [ ! -s /secrets/grafana/admin.password ]; then
  random_hex 16 > /secrets/grafana/admin.password
  echo "init: generated the Grafana admin password"
fi
cp /secrets/postgres/password /secrets/node/postgres.password

equipment-live --auth-key-file /secrets/node/token.key token \
  --subject compose-admin --role admin --scope '*' --hours 12 > /secrets/node/admin.token.new
mv /secrets/node/admin.token.new /secrets/node/admin.token
echo "init: issued a 12-hour admin token (docker compose exec node-1 cat /run/secrets/equipment-live/admin.token)"

chown "$NODE_UID:$NODE_UID" /secrets/node/*
chmod 0400 /secrets/node/*
# The postgres entrypoint reads the file again after dropping to its own user.
chown "$POSTGRES_UID" /secrets/postgres/password
chmod 0400 /secrets/postgres/password
chown "$GRAFANA_UID" /secrets/grafana/admin.password
chmod 0400 /secrets/grafana/admin.password
