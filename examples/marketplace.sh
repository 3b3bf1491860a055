#!/usr/bin/env bash
# The sidecar marketplace on a local registry, end to end (fresh Debian machine, as root):
#
#   bash examples/marketplace.sh
#
# A sidecar author publishes the seed sidecars to Debian's docker-registry on loopback and signs
# them; a user searches, reviews and approves them under a trust policy that requires the
# team's signature, and runs the redis-exporter pod with `image: REGISTRY/wpod/redis-exporter:0.1.0`.
# Then an upgrade that reads the main process shows its permission diff and waits for approval.
# Everything lives in a scratch directory (its own wpod root, policy, approvals, keys) that is
# removed at the end, with the registry. MARKET_PORT picks the registry's port (default 5055).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
if [[ -z "${MARKET_SKIP_SETUP:-}" ]]; then
  bash .ci/setup
  cargo build -p wpod -p wpod-test-support   # wpod, and (through tests/support) the guests
fi
wpod="$repo/target/debug/wpod"
sidecars="$repo/target/sidecars"
addr="127.0.0.1:${MARKET_PORT:-5055}"
reg="$addr/wpod"
work=$(mktemp -d /tmp/wpod-market.XXXXXX)
source "$repo/tests/images/registry.sh"
cleanup() {
  stop_registry
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

# A registry of our own on loopback (Debian's docker-registry, its own storage).
start_registry "$work" "$addr"
# wpod's configuration for this session: plain HTTP to the loopback registry, a private root,
# the trust policy and the approvals file.
export WPOD_ROOT="$work/root" WPOD_REGISTRIES_CONF="$work/registries.conf" \
  WPOD_POLICY="$work/policy.json" WPOD_APPROVALS="$work/approvals.json"
printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$addr" > "$WPOD_REGISTRIES_CONF"
cd "$work"

step "the author: a signing key, then push and sign each seed sidecar"
"$wpod" key generate team
declare -A about=(
  [redis-exporter]="Prometheus metrics from Redis INFO, redis_exporter's names"
  [proc-monitor]="CPU, memory and restarts of the main container as Prometheus metrics"
  [log-tail]="Follows the main container's output and ships it by stream"
  [log-shipper]="Ships log files from a shared volume to a TCP collector"
  [tls-proxy]="Terminates TLS in front of the main container"
  [config-reloader]="Signals the main container when its config volume changes"
  [poller]="Polls an HTTP endpoint and writes what it gets to a shared volume"
  [hello]="Prints its argv and env and lists a volume"
)
for name in "${!about[@]}"; do
  ref=$("$wpod" push "$sidecars/$name.wasm" "$reg/$name:0.1.0" \
    --annotation "org.opencontainers.image.description=${about[$name]}" \
    --annotation "org.opencontainers.image.source=https://example.invalid/wpod/guests/$name")
  "$wpod" sign "$ref" --key team.key
done

step "the user: a trust policy that requires the team's signature for $reg"
cat > "$WPOD_POLICY" <<JSON
{"default": [{"type": "insecureAcceptAnything"}],
 "transports": {"docker": {"$reg": [{"type": "sigstoreSigned", "keyPath": "$work/team.pub"}]}}}
JSON
cat "$WPOD_POLICY"

step "wpod search $addr/exporter"
"$wpod" search "$addr/exporter"

step "wpod inspect $reg/redis-exporter:0.1.0   (from the registry, before download)"
"$wpod" inspect "$reg/redis-exporter:0.1.0" | sed -n '1,12p'

step "wpod pull --yes $reg/redis-exporter:0.1.0   (verify, review, approve, compile)"
"$wpod" pull --yes "$reg/redis-exporter:0.1.0"

step "the redis-exporter pod, its sidecar by registry reference"
sed "s#image: ../target/sidecars/redis-exporter.wasm#image: $reg/redis-exporter:0.1.0#" \
  "$repo/examples/redis-exporter.yaml" > redis.yaml
grep -n "image:" redis.yaml
"$wpod" run redis.yaml > pod.log 2>&1 &
pod=$!
for _ in $(seq 100); do curl -fs http://127.0.0.1:9121/metrics >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs http://127.0.0.1:9121/metrics | grep -E '^redis_(up|connected_clients|uptime_in_seconds) ' || true
kill -INT "$pod"; wait "$pod" || true
tail -4 pod.log

step "an upgrade: watcher 1.0 is hello; 2.0 reads the main process"
"$wpod" push "$sidecars/hello.wasm" "$reg/watcher:1.0" >/dev/null
"$wpod" sign "$reg/watcher:1.0" --key team.key >/dev/null
"$wpod" pull --yes "$reg/watcher:1.0" 2>&1 | tail -2
"$wpod" push "$sidecars/proc-monitor.wasm" "$reg/watcher:2.0" >/dev/null
"$wpod" sign "$reg/watcher:2.0" --key team.key >/dev/null
echo "-- wpod pull $reg/watcher:2.0 (no terminal, no --yes: shows the diff, refuses)"
"$wpod" pull "$reg/watcher:2.0" </dev/null 2>&1 | grep -vE '^  wasi:|^pulling|^  layer' || true

step "done: the registry and $work are removed"
