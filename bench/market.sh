#!/usr/bin/env bash
# Sidecars from a registry, wpod beside oras, on Debian's docker-registry on loopback (as root):
#
#   bench/market.sh [-r ROUNDS] WPOD
#
# Pushes and signs the seed sidecars once (target/sidecars, built by `cargo build -p
# wpod-test-support`), then per round, interleaved, for each sidecar:
#   wpod pull: `wpod pull --yes REF` into an empty wpod root under a policy that requires the
#              signature: resolve, verify the signature, download, check the bytes, recompute
#              the imports, record the approval, compile into the cache (cold: nothing cached)
#   oras pull: oras-py's `pull` of the same artifact into an empty directory (download only)
# and, warm (sidecar approved and compiled), the wall time of `wpod run` of a pod whose main
# container is `true` and whose sidecar is hello: named by registry reference
# (imagePullPolicy: IfNotPresent) against the same component as a .wasm file.
# Prints the median (min-max) of each in milliseconds.
set -euo pipefail
rounds=5
while getopts "r:" opt; do
  case $opt in r) rounds=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
wpod=$(realpath "${1:?usage: $0 [-r ROUNDS] WPOD}")
root=$(cd "$(dirname "$0")/.." && pwd)
sidecars="$root/target/sidecars"
python3 -c "import oras.provider" 2>/dev/null || { echo "oras-py is needed: python3 -m pip install oras" >&2; exit 2; }
addr=127.0.0.1:5078
work=$(mktemp -d /tmp/wpod-marketbench.XXXXXX)
source "$root/tests/images/registry.sh"
cleanup() {
  stop_registry
  rm -rf "$work"
}
trap cleanup EXIT
start_registry "$work" "$addr"
export WPOD_REGISTRIES_CONF="$work/registries.conf" WPOD_POLICY="$work/policy.json"
printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$addr" > "$WPOD_REGISTRIES_CONF"
cd "$work"
WPOD_ROOT="$work/author" "$wpod" key generate team >/dev/null 2>&1
names=(hello probe redis-exporter proc-monitor log-tail log-shipper tls-proxy config-reloader)
for n in "${names[@]}"; do
  ref=$(WPOD_ROOT="$work/author" "$wpod" push "$sidecars/$n.wasm" "$addr/bench/$n:1")
  WPOD_ROOT="$work/author" "$wpod" sign "$ref" --key team.key >/dev/null
done
printf '{"default": [{"type": "sigstoreSigned", "keyPath": "%s"}]}\n' "$work/team.pub" > "$WPOD_POLICY"

ms() { echo $(( ($2 - $1) / 1000000 )); }
now() { date +%s%N; }
declare -A times
for r in $(seq "$rounds"); do
  for n in "${names[@]}"; do
    rm -rf "$work/r"; t0=$(now)
    WPOD_ROOT="$work/r" "$wpod" pull --yes "$addr/bench/$n:1" >/dev/null 2>&1
    t1=$(now); times[wpod-$n]+="$(ms "$t0" "$t1") "
    rm -rf "$work/o"; t0=$(now)
    python3 - "$addr/bench/$n:1" "$work/o" <<'PY' >/dev/null
import sys, oras.provider
ref, out = sys.argv[1], sys.argv[2]
oras.provider.Registry(hostname=ref.split("/", 1)[0], insecure=True).pull(target=ref, outdir=out)
PY
    t1=$(now); times[oras-$n]+="$(ms "$t0" "$t1") "
  done
done

# Warm pod start: the sidecar approved and compiled, by reference and by file.
export WPOD_ROOT="$work/warm"
"$wpod" pull --yes "$addr/bench/hello:1" >/dev/null 2>&1
pod() {
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: bench-market}
spec:
  restartPolicy: Never
  containers:
  - name: main
    command: ["true"]
  - name: hello
    image: $1
    imagePullPolicy: IfNotPresent
YAML
}
pod "$addr/bench/hello:1" > ref.yaml
cp "$sidecars/hello.wasm" hello.wasm
pod hello.wasm > file.yaml
"$wpod" run file.yaml >/dev/null 2>&1   # compile the file's cache entry too
for r in $(seq "$rounds"); do
  for kind in ref file; do
    t0=$(now); "$wpod" run "$kind.yaml" >/dev/null 2>&1; t1=$(now)
    times[start-$kind]+="$(ms "$t0" "$t1") "
  done
done

summary() {
  # median (min-max) of the numbers in $1
  tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {printf "%d (%d-%d)", a[int((NR+1)/2)], a[1], a[NR]}'
}
printf '%-16s %10s %22s %22s\n' sidecar bytes "wpod pull+verify+compile" "oras pull"
for n in "${names[@]}"; do
  printf '%-16s %10s %22s %22s\n' "$n" "$(stat -c %s "$sidecars/$n.wasm")" "$(summary "${times[wpod-$n]}")" "$(summary "${times[oras-$n]}")"
done
echo
echo "pod start to exit, warm (ms): by reference $(summary "${times[start-ref]}"), by file $(summary "${times[start-file]}")"
