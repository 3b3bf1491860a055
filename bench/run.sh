#!/usr/bin/env bash
# The benchmark suite: every comparison of wpod against the same peers, in one command (as root,
# from anywhere):
#
#   bench/run.sh [-q] [-f] [-o OUTDIR] [-s SCRIPTS] [WPOD]
#
#   -q          quick: fewer rounds and shorter runs, a smoke run of a few minutes (full: ~20 min)
#   -f          write the results even when the machine was busy (they are marked noisy)
#   -o OUTDIR   where the results go (default /tmp/wpod-bench-TIME); -s: only these measures
#               (comma-separated: start-peers,pod-ready,pod-ready-none,start-path,syscalls,pods,density,ports,net,tls,logship,logship-after,exporters)
#   WPOD        the wpod binary (default target/release/wpod of this repository)
#
# Installs the Debian packages of the peers that are missing (crun runc podman nginx-light
# haproxy wrk rsyslog socat prometheus-redis-exporter prometheus-process-exporter busybox-static, linux-perf:
# bench/lib.sh, services kept from starting), notes the machine, then runs each per-measure
# script in turn (each interleaves its tools round by round; methods in their headers and
# bench/SUITE.md):
#   start-peers.sh  spawn to first connect: process, runc, crun, podman, wpod apply/run/bench
#   pod-ready.sh    pod start to all 4 containers ready: 3 Wasm vs 3 native sidecars, unshare floor
#                   (pod-ready-none: the same pods on no network, -N, as the floor is, each run
#                   after half a second of quiet, -g 500)
#   start-path.sh   the same Wasm pod's start step by step, from the kernel's exec events (perf):
#                   wpod's exec to the holder's, the shim's, the main's exec and to all ready
#   syscalls.sh     a native container's system calls under RuntimeDefault seccomp vs Unconfined
#                   vs the host
#   pods.sh         many pods on one host (up to 200): start, PSS, ps and stop per pod
#                   (rootless ones too with WPOD_BENCH_USER=USER, an ordinary user with subuids)
#   density.sh      PSS per idle sidecar (N = 1, 10, 100): wpod vs crun vs podman
#   ports.sh        hostPort (kernel DNAT) vs direct to the pod IP vs the userspace forwarder
#   net.sh          pod to pod vs a bare veth pair, network setup vs podman, sidecar egress
#   tls.sh          the tls-proxy sidecar vs nginx and haproxy terminating TLS
#   logship.sh      the log-shipper sidecar vs `tail -F | socat` and rsyslog     (when present)
#   logship.sh -a   the same with the receiver started after the shipper (measure logship-after)
#   exporters.sh    the exporter sidecars vs prometheus-*-exporter               (when present)
# Each script runs under bench/load.py, which notes the CPU that processes outside the measure
# used meanwhile (OUTDIR/NAME.load.json): past $WPOD_BENCH_MAX_OTHER_CPU percent of the machine
# (default 10) the measure is noisy, and the suite refuses to write results (exit 1; -f writes
# them, marked). Each script's JSON lines go to OUTDIR/NAME.jsonl and its human output to OUTDIR/NAME.log;
# bench/report.py turns them into OUTDIR/results.json (every run, medians, ranges, ratios),
# OUTDIR/*.svg (one bar chart per measure) and OUTDIR/summary.md, and prints the table.
# A script that fails, or runs past 10 min (quick) / 30 min (full), is reported and the others
# still run; the exit code is then 1.
set -euo pipefail
quick=0 outdir= only= force=0
while getopts "qfo:s:" opt; do
  case $opt in q) quick=1 ;; f) force=1 ;; o) outdir=$OPTARG ;; s) only=$OPTARG ;; *) exit 2 ;; esac
done
max_other=${WPOD_BENCH_MAX_OTHER_CPU:-10}
[[ $max_other =~ ^[0-9]+$ ]] || { echo "$0: WPOD_BENCH_MAX_OTHER_CPU=$max_other: a whole percentage" >&2; exit 2; }
shift $((OPTIND - 1))
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/bench/lib.sh"
wpod=$(realpath "${1:-$root/target/release/wpod}")
((EUID == 0)) || { echo "$0: needs root (namespaces, cgroups, containers)" >&2; exit 2; }
[ -x "$wpod" ] || { echo "$wpod: not an executable (cargo build --release -p wpod)" >&2; exit 2; }
[ -d "$root/target/sidecars" ] || { echo "target/sidecars is missing: cargo build -p wpod-test-support" >&2; exit 2; }
outdir=${outdir:-/tmp/wpod-bench-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$outdir"
outdir=$(realpath "$outdir")

install_peers crun runc podman nginx haproxy wrk rsyslogd socat prometheus-redis-exporter \
  prometheus-process-exporter busybox nsenter unshare curl openssl python3 perf

# Every measure runs in a network namespace of its own (loopback only, no route out): the pods'
# CNI bridge, NAT rules and test hosts go with it, and wpod writes its network configuration
# into the results directory, not /etc/wpod/net.d.
if [ -z "${WPOD_BENCH_ISOLATED:-}" ]; then
  export WPOD_BENCH_ISOLATED=1 WPOD_CNI_CONF_DIR=$outdir/net.d
  again=(-o "$outdir")
  ((quick)) && again+=(-q)
  ((force)) && again+=(-f)
  [ -n "$only" ] && again+=(-s "$only")
  exec unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh bash "$0" "${again[@]}" "$wpod"
fi

# What is machine-specific, recorded with the results.
flags=$(grep -m1 '^flags' /proc/cpuinfo)
has() { [[ " $flags " == *" $1 "* ]] && echo yes || echo no; }
cgroups=v1
[ -e /sys/fs/cgroup/cgroup.controllers ] && cgroups=v2
mountpoint -q /sys/fs/cgroup/unified 2>/dev/null && cgroups="hybrid (v1 controllers, cgroup2 at /sys/fs/cgroup/unified)"
meta=(
  "host=$(uname -n)" "kernel=$(uname -r)" "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
  "cpus=$(nproc)" "mem_gib=$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)"
  "aes_ni=$(has aes)" "sha_ni=$(has sha_ni)" "avx2=$(has avx2)" "cgroups=$cgroups"
  "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)" "wpod=$wpod" "wpod_sha256=$(sha256sum "$wpod" | cut -c1-16)"
  "repo_commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" "mode=$( ((quick)) && echo quick || echo full)"
  "crun=$(crun --version | head -1)" "runc=$(runc --version | head -1)" "podman=$(podman --version)"
  "nginx=$(nginx -v 2>&1)" "haproxy=$(haproxy -v | head -1)" "wrk=$(wrk -v 2>&1 | head -1 || true)"
)
say "bench/run.sh: $( ((quick)) && echo quick || echo full) run of $wpod into $outdir"
printf '%s\n' "${meta[@]}" | sed 's/^/  /' >&2

# name, then the arguments of each mode.
if ((quick)); then
  declare -A args=(
    [start-peers]="-r 3 -n 5" [pod-ready]="-r 3" [pod-ready-none]="-r 3 -N -g 500" [start-path]="-r 5" [syscalls]="-r 2" [pods]="-r 1 -n '10 50'" [density]="-r 1 -n '1 10'" [ports]="-r 2 -d 1" [net]="-r 2 -d 1"
    [tls]="-r 1 -d 1 --json" [logship]="-r 1 -m 20" [logship-after]="-r 1 -m 20 -a 500" [exporters]="-r 2 -n 50 -w 5"
  )
else
  declare -A args=(
    [start-peers]="-r 11 -n 10" [pod-ready]="-r 11" [pod-ready-none]="-r 11 -N -g 500" [start-path]="-r 15" [syscalls]="-r 5" [pods]="-r 2 -n '10 50 100 200'" [density]="-r 3 -n '1 10 100' -L" [ports]="-r 3 -d 3" [net]="-r 5 -d 3"
    [tls]="-r 2 -d 3 --json" [logship]="-r 3 -m 100" [logship-after]="-r 3 -m 100 -a 500" [exporters]="-r 3"
  )
fi
# The sidecars measured: the built guests of target/sidecars (cargo build -p wpod-test-support),
# unless $SIDECARS names another directory (bench/exporters.sh reads it too).
export SIDECARS=${SIDECARS:-$root/target/sidecars}
meta+=("sidecars=$SIDECARS")
limit=$( ((quick)) && echo 600 || echo 1800)
failed=() noisy=()
run_measure() { # NAME: runs bench/NAME.sh with its mode's arguments
  # logship-after: bench/logship.sh with the receiver started after the shipper (-a).
  local name=$1 script=$root/bench/${1%-after}.sh t0
  [ "$name" = pod-ready-none ] && script=$root/bench/pod-ready.sh
  if [ -n "$only" ] && [[ ",$only," != *",$name,"* ]]; then return 0; fi
  if [ ! -f "$script" ]; then
    say "== $name: ${script#"$root"/} is not there, skipped"
    return 0
  fi
  local a=${args[$name]}
  case $name in
    logship*) a="$a -w $wpod -s wpod=$SIDECARS/log-shipper.wasm" ;; # -w WPOD, no positional argument
    tls) a="$a -o $outdir/tls-full.json $wpod" ;;                     # its own JSON (every figure)
    pods) a="$a ${WPOD_BENCH_USER:+-u $WPOD_BENCH_USER} $wpod" ;;     # rootless pods too, as that user
    *) a="$a $wpod" ;;
  esac
  say "== $name: ${script#"$root"/} $a"
  t0=$(date +%s)
  local rc=0
  # A script that hangs is stopped (SIGTERM: its traps clean up) after $limit seconds.
  # bench/load.py notes what the rest of the machine used meanwhile.
  eval timeout -k 30 "$limit" python3 "$root/bench/load.py" -o "$outdir/$name.load.json" -- \
    bash "$script" "$a" > "$outdir/$name.jsonl" 2> "$outdir/$name.log" || rc=$?
  local load
  load=$(python3 - "$outdir/$name.load.json" "$max_other" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    print("unknown - load not recorded"); sys.exit()
share = 100 * d["others_share"]
top = ", ".join(f"{c} {s:.1f} s" for c, _, s in d["top_others"][:3]) or "none"
print(f'{"noisy" if share > float(sys.argv[2]) else "quiet"} {share:.1f}% of {d["cpus"]} CPUs to other processes over {d["wall_s"]:.0f} s (top: {top}); load {d["loadavg_start"]} -> {d["loadavg_end"]}')
PY
)
  meta+=("load_$name=${load#* }")
  if [[ $load == noisy* ]]; then
    say "   NOISY: ${load#* } (over $max_other%)"
    noisy+=("$name")
  fi
  if ((rc == 0)); then
    say "   done in $(($(date +%s) - t0)) s, $(grep -c '^{' "$outdir/$name.jsonl") rows"
  else
    say "   FAILED after $(($(date +%s) - t0)) s (exit $rc$( ((rc == 124)) && echo ": timed out")); the end of $outdir/$name.log:"
    tail -5 "$outdir/$name.log" | sed 's/^/     /' >&2
    failed+=("$name")
  fi
}
for m in start-peers pod-ready pod-ready-none start-path syscalls pods density ports net tls logship logship-after exporters; do run_measure "$m"; done

meta+=("loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" "failed=${failed[*]:-}" "noisy=${noisy[*]:-}"
  "max_other_cpu_percent=$max_other")
if ((${#noisy[@]})) && ! ((force)); then
  say "results not written: other processes used more than $max_other% of the CPU during: ${noisy[*]}"
  say "  (their runs and loads are in $outdir: *.jsonl, *.load.json; rerun on a quiet machine, or -f to write them marked noisy)"
  exit 1
fi
meta_args=()
for kv in "${meta[@]}"; do meta_args+=(--meta "$kv"); done
shopt -s nullglob
rows=("$outdir"/*.jsonl)
((${#rows[@]})) || { echo "no results" >&2; exit 1; }
python3 "$root/bench/report.py" -o "$outdir" --markdown "${meta_args[@]}" "${rows[@]}" > "$outdir/summary.md"
python3 "$root/bench/report.py" -o "$outdir" "${meta_args[@]}" "${rows[@]}"
say "results: $outdir/results.json, $outdir/summary.md, $(ls "$outdir"/*.svg | wc -l) SVG plots"
((${#failed[@]} == 0)) || { say "failed: ${failed[*]}"; exit 1; }
