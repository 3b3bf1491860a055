#!/usr/bin/env bash
# Where a pod's start goes, step by step, seen in the kernel's exec events (as root; needs perf):
#
#   bench/start-path.sh [-r RUNS] [-g MS] WPOD
#
# The pod is pod-ready.sh's Wasm pod on no network (`wpod.dev/network: none`): a native
# `sleep infinity` main and 3 `probe` sidecars (`ready wait-stopping`), private $WPOD_ROOT,
# terminationGracePeriodSeconds 0. Each run is `wpod run --output json` under
# `perf record -a -k CLOCK_MONOTONIC -e sched:sched_process_exec`. Counted from wpod's own exec,
# the milliseconds to:
#   the holder's exec   the pod's namespaces begin (planning and the state directory are done)
#   the shim's exec     the sandbox is made, the first container starts
#   the main's exec     `sleep` runs in its container
#   all 4 ready         the receipt of the 4th `ready` event (CLOCK_MONOTONIC on both sides)
# A change of a few tenths of a millisecond in one step shows here; pod-ready.sh's medians from
# python's spawn to ready move by a millisecond between runs on a 2-core machine. One warm-up
# run (the compiled cache entry), then RUNS (default 15), each after MS of quiet (default 300:
# the kernel's cgroup-move wait, as pod-ready.sh's -g says). One JSON object per run and step
# on stdout; progress on stderr.
set -euo pipefail
runs=15 gap=300
while getopts "r:g:" opt; do
  case $opt in
    r) runs=$OPTARG ;;
    g) gap=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
(($# == 1)) || { echo "usage: $0 [-r RUNS] [-g MS] WPOD" >&2; exit 2; }
((EUID == 0)) || { echo "$0: needs root (pods, perf -a)" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/bench/lib.sh"
wpod=$(realpath "$1")
probe=$root/target/sidecars/probe.wasm
[ -f "$probe" ] || { echo "$probe is missing: build the guests (cargo build -p wpod-test-support)" >&2; exit 2; }
install_peers python3 perf
perf record -q -o /dev/null -a -e sched:sched_process_exec -- true ||
  { echo "$0: perf cannot record sched:sched_process_exec here (above: why; tracefs, perf_event_paranoid)" >&2; exit 2; }

work=$(mktemp -d /tmp/wpod-startpath.XXXXXX)
export WPOD_ROOT=$work/wpodroot
cleanup() {
  set +e
  wpod_pods_cleanup "$wpod" startpath
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

{
  echo "apiVersion: v1
kind: Pod
metadata: {name: startpath, annotations: {wpod.dev/network: none}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {name: main, command: [sleep, infinity]}"
  for i in 1 2 3; do echo "  - {name: side$i, image: $probe, args: [ready, wait-stopping]}"; done
} > "$work/pod.yaml"

say "start-path: $runs runs, work $work"
python3 - "$wpod" "$work" "$runs" "$gap" <<'PY'
import json, os, subprocess, sys, time
wpod, work, runs, gap = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) / 1000
log = open(f"{work}/run.log", "ab")
env = {**os.environ, "WPOD_ROOT": f"{work}/wpodroot"}
data = f"{work}/perf.data"
STEPS = ["the holder's exec", "the shim's exec", "the main's exec", "all 4 ready"]

def quiet(*cmd):
    subprocess.run([wpod, *cmd], env=env, stdout=subprocess.DEVNULL, stderr=log)

def execs():
    """(time in s, filename, pid) of each exec perf saw, in order."""
    out = subprocess.run(["perf", "script", "-i", data, "--ns", "-F", "pid,time,trace"],
                         capture_output=True, text=True, check=True).stdout
    seen = []
    for line in out.splitlines():
        if "filename=" in line:
            pid, t = line.split()[:2]
            seen.append((float(t.rstrip(":")), line.split("filename=")[1].split()[0], int(pid)))
    return sorted(seen)

def one():
    """ms from wpod's exec to each step."""
    p = subprocess.Popen(["perf", "record", "-q", "-a", "-k", "CLOCK_MONOTONIC", "-e",
                          "sched:sched_process_exec", "-o", data, "--", "sh", "-c",
                          # perf's own start-up work goes on a while after it starts its
                          # command: wpod starts once it is done.
                          'sleep 0.1; exec "$0" run --output json "$1"', wpod, f"{work}/pod.yaml"],
                         env=env, stdout=subprocess.PIPE, stderr=log)
    ready, at_ready, main_pid = set(), None, None
    for line in p.stdout:
        t = time.monotonic_ns() / 1e9
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("type") != "event":
            continue
        if e["event"] == "started" and e.get("container") == "main":
            main_pid = e.get("pid")
        elif e["event"] == "ready":
            ready.add(e["container"])
            if len(ready) == 4:
                at_ready = t
                break
        elif e["event"] in ("exited", "failedToStart", "podFinished"):
            break
    quiet("stop", "startpath")
    for _ in p.stdout:
        pass
    p.wait(timeout=60)
    quiet("rm", "startpath")
    if at_ready is None:
        raise RuntimeError(f"not all containers became ready ({sorted(ready)}); see {work}/run.log")
    seen = execs()
    start = next(t for t, f, _ in seen if f == wpod)
    # The helpers run from the sealed view's descriptor: the holder first, then the main's shim.
    helpers = [t for t, f, _ in seen if t >= start and f.startswith("/proc/self/fd/")]
    # The main's `sleep`: the PID its `started` event gave (no other `sleep` on the machine).
    main = next(t for t, f, pid in seen if pid == main_pid and f.endswith("/sleep"))
    if len(helpers) < 2:
        raise RuntimeError(f"expected the holder's and the shim's exec, saw {seen}")
    return [(t - start) * 1000 for t in (helpers[0], helpers[1], main, at_ready)]

one()  # warm-up
for run in range(runs):
    time.sleep(gap)
    for step, ms in zip(STEPS, one()):
        print(json.dumps({"tool": "wpod: native main + 3 Wasm sidecars", "ref": True,
                          "measure": f"start path: wpod's exec to {step} (network: none)",
                          "value": round(ms, 3), "unit": "ms", "run": run, "better": "lower"}), flush=True)
        print(f"  run {run}: {step}: {ms:.2f} ms", file=sys.stderr, flush=True)
PY
