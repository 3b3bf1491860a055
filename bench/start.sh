#!/usr/bin/env bash
# Sidecar start and idle memory of wpod builds, side by side (as root, from the repository root):
#
#   bench/start.sh [-r ROUNDS] [-n RUNS] WPOD...
#
# Runs `WPOD bench --runs RUNS --density 50 --json` for each binary in turn, ROUNDS times
# (interleaved, so a busy moment hits every binary alike), and prints per binary the median of
# all runs of each start kind (cold, warm, restart: to the guest's first connect) and the idle
# sidecar's memory. `wpod bench`'s method is in BENCHMARKS.md.
set -euo pipefail
rounds=3 runs=10
while getopts "r:n:" opt; do
  case $opt in r) rounds=$OPTARG ;; n) runs=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
(($#)) || { echo "usage: $0 [-r ROUNDS] [-n RUNS] WPOD..." >&2; exit 2; }
out=$(mktemp -d /tmp/wpod-startbench.XXXXXX)
trap 'rm -rf "$out"' EXIT
for ((i = 0; i < rounds; i++)); do
  for w in "$@"; do
    "$w" bench --runs "$runs" --density 50 --json > "$out/$(echo "$w" | tr / _).$i.json"
  done
done
python3 - "$out" "$@" <<'PY'
import glob, json, statistics, sys
out, binaries = sys.argv[1], sys.argv[2:]
print(f"{'wpod':<32} {'cold ms':>9} {'warm ms':>9} {'restart ms':>11} {'idle KiB':>9}")
for w in binaries:
    reports = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{w.replace('/', '_')}.*.json"))]
    def median(kind):
        # The median of the rounds' medians (each a median of RUNS starts).
        vals = [t["first_connect_ms"]["median"] for r in reports for t in r["timings"] if t["kind"] == kind]
        return f"{statistics.median(vals):.2f}"
    idle = [r["density"]["per_sidecar_kib"] for r in reports if r.get("density")] or [float("nan")]
    print(f"{w:<32} {median('cold'):>9} {median('warm'):>9} {median('restart'):>11} {statistics.median(idle):>9.0f}")
PY
