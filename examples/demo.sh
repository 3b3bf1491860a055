#!/usr/bin/env bash
# Sets up a fresh Debian machine (as root), builds wpod and the sidecars, and runs the demo pod
# (examples/demo.yaml) in the foreground: Ctrl-C stops it, in order, within its grace period.
# DEMO_SECONDS=N stops it by itself after N seconds (as if Ctrl-C was pressed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
cargo build -p wpod -p wpod-test-support   # wpod, and (through tests/support) the guests
echo "== wpod run examples/demo.yaml   (curl http://127.0.0.1:8080/poll.log from another terminal)"
if [[ -n "${DEMO_SECONDS:-}" ]]; then
  ./target/debug/wpod run examples/demo.yaml &
  pid=$!
  sleep "$DEMO_SECONDS"
  echo "== curl http://127.0.0.1:8080/poll.log"
  curl -s http://127.0.0.1:8080/poll.log | tail -n 3 || true
  kill -INT "$pid"
  wait "$pid"
else
  exec ./target/debug/wpod run examples/demo.yaml
fi
