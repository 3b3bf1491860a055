#!/usr/bin/env bash
# Log throughput of wpod builds, side by side (as root):
#
#   bench/logs.sh [-r RUNS] [-m MIB] WPOD...
#
# For each wpod binary, interleaved, RUNS times: a pod whose native container writes MIB MiB of
# 100-byte lines to stdout and exits (`yes | head -c`), and a pod whose Wasm sidecar does the
# same (the `hostile` guest's `flood:MIB`); wpod records every line (terminal output to
# /dev/null, CRI log file, history). Each time is `wpod run` from start to exit minus the same
# pod writing nothing (start-up and teardown), so what is left is the cost of the output. Prints
# the median and range per binary, in MiB/s. Needs the guests built (target/sidecars).
set -euo pipefail
runs=5 mib=64
while getopts "r:m:" opt; do
  case $opt in r) runs=$OPTARG ;; m) mib=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
(($#)) || { echo "usage: $0 [-r RUNS] [-m MIB] WPOD..." >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/wpod-logbench.XXXXXX)
trap 'rm -rf "$work"' EXIT
line=$(printf '%099d' 0)

pod() { # name, container spec
  cat > "$work/$1.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: {name: logbench-$1}
spec:
  restartPolicy: Never
  containers:
$2
YAML
}
pod native "  - name: main
    command: [sh, -c, 'yes $line | head -c $((mib << 20))']"
pod native-empty "  - name: main
    command: [true]"
pod wasm "  - name: main
    image: $root/target/sidecars/hostile.wasm
    args: [flood:$mib]"
pod wasm-empty "  - name: main
    image: $root/target/sidecars/hostile.wasm
    args: [exit:0]"

seconds() { # wpod, pod file
  local start end
  start=$(date +%s.%N)
  "$1" run "$2" > /dev/null 2>&1
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { print b - a }'
}

declare -A samples
for ((i = 0; i < runs; i++)); do
  for w in "$@"; do
    for kind in native wasm; do
      full=$(seconds "$w" "$work/$kind.yaml")
      empty=$(seconds "$w" "$work/$kind-empty.yaml")
      samples["$w|$kind"]+="$(awk -v m="$mib" -v f="$full" -v e="$empty" 'BEGIN { print m / (f - e) }') "
    done
  done
done

printf '%-40s %-7s %12s %22s\n' "wpod" "writer" "MiB/s median" "range"
for w in "$@"; do
  for kind in native wasm; do
    # shellcheck disable=SC2086
    sorted=$(printf '%s\n' ${samples["$w|$kind"]} | sort -g)
    n=$(echo "$sorted" | wc -l)
    median=$(echo "$sorted" | sed -n "$(((n + 1) / 2))p")
    printf '%-40s %-7s %12.1f %10.1f - %-10.1f\n' "$w" "$kind" "$median" \
      "$(echo "$sorted" | head -1)" "$(echo "$sorted" | tail -1)"
  done
done
