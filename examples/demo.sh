#!/usr/bin/env bash
# Sets up a fresh Debian machine (as root), builds wpod and the sidecars, and runs the demo pod
# (examples/sample-logs.yaml: nginx, a curl client, and a Wasm log tail that starts first) in
# the foreground: Ctrl-C stops it, in order, within its grace period.
# DEMO_SECONDS=N stops it by itself after N seconds (as if Ctrl-C was pressed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
cargo build -p wpod -p wpod-test-support   # wpod, and (through tests/support) the guests
# wpod on PATH, as every example and scaffold calls it, with its pods' helper binary beside it
# (the README's install command does the same with a release build).
install -m 0755 target/debug/wpod target/debug/wpod-helper /usr/local/bin/
echo "== installed /usr/local/bin/wpod ($(wpod --version))"
echo "== wpod run examples/sample-logs.yaml   (curl http://127.0.0.1:8080/ from another terminal)"
if [[ -n "${DEMO_SECONDS:-}" ]]; then
  wpod run examples/sample-logs.yaml &
  pid=$!
  sleep "$DEMO_SECONDS"
  echo "== curl -A wpod-demo http://127.0.0.1:8080/   (watch for it among the shipped access lines)"
  curl -s -o /dev/null -A wpod-demo http://127.0.0.1:8080/ || true
  sleep 1
  kill -INT "$pid"
  wait "$pid"
else
  exec wpod run examples/sample-logs.yaml
fi
