#!/usr/bin/env bash
# Pod start to all containers ready: a native main + 3 Wasm sidecars against a native main + 3
# native sidecars (as root):
#
#   bench/pod-ready.sh [-r ROUNDS] [-N] [-g MS] WPOD
#
# -N: the pods are on no network (`wpod.dev/network: none`: the namespaces, no CNI plugin),
# as the floor is; without it they are on the default CNI network.
# -g MS: a quiet spell of MS before each run (default 0, back to back). A cgroup move the
# kernel locks for waits for an RCU grace period unless another passed within the last one,
# so back-to-back runs can ride on the previous run's moves; a spell shows a start on its own.
#
# Pods (private $WPOD_ROOT, terminationGracePeriodSeconds 0), all four containers regular ones
# (they start together):
#   wasm     main `sleep infinity` (native, host filesystem) + 3 sidecars target/sidecars/probe.wasm
#            `ready wait-stopping` (each tells the pod it is ready, then idles until stopping)
#   native   main `sleep infinity` + 3 native sidecars `sleep infinity`
#   floor    `unshare -n -u -i -p -f --mount-proc true` to its exit: the namespaces alone
# Each run spawns `wpod run --output json` and reads its event lines as they come: the time from
# just before the spawn to the receipt of the 4th container's "started" and "ready" events (and
# of "podStarted": the sandbox), then stops the pod (SIGTERM to that `wpod run`) and removes it.
# One warm-up of each (the compiled cache entry), then ROUNDS rounds (default 11), the order
# rotating. One JSON object per run on stdout; progress on stderr.
set -euo pipefail
rounds=11 metadata="{name: readybench}" suffix= gap=0
while getopts "r:Ng:" opt; do
  case $opt in
    r) rounds=$OPTARG ;;
    g) gap=$OPTARG ;;
    N) metadata="{name: readybench, annotations: {wpod.dev/network: none}}" suffix=" (network: none)" ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
(($# == 1)) || { echo "usage: $0 [-r ROUNDS] [-N] [-g MS] WPOD" >&2; exit 2; }
((EUID == 0)) || { echo "$0: needs root" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/bench/lib.sh"
wpod=$(realpath "$1")
probe=$root/target/sidecars/probe.wasm
[ -f "$probe" ] || { echo "$probe is missing: build the guests (cargo build -p wpod-test-support)" >&2; exit 2; }
install_peers python3 unshare

work=$(mktemp -d /tmp/wpod-podready.XXXXXX)
export WPOD_ROOT=$work/wpodroot
cleanup() {
  set +e
  wpod_pods_cleanup "$wpod" readybench
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pod() { # pod KIND: the manifest
  echo "apiVersion: v1
kind: Pod
metadata: $metadata
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {name: main, command: [sleep, infinity]}"
  for i in 1 2 3; do
    if [ "$1" = wasm ]; then
      echo "  - {name: side$i, image: $probe, args: [ready, wait-stopping]}"
    else
      echo "  - {name: side$i, command: [sleep, infinity]}"
    fi
  done
}
pod wasm > "$work/wasm.yaml"
pod native > "$work/native.yaml"

say "pod-ready: $rounds rounds, work $work"
python3 - "$wpod" "$work" "$rounds" "$suffix" "$gap" <<'PY'
import json, os, signal, subprocess, sys, time
wpod, work, rounds, suffix, gap = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]) / 1000
log = open(f"{work}/run.log", "ab")
env = {**os.environ, "WPOD_ROOT": f"{work}/wpodroot"}

def emit(tool, measure, value, run, ref=False):
    measure += suffix
    print(json.dumps({"tool": tool, "measure": measure, "value": round(value, 3), "unit": "ms", "run": run,
                      "better": "lower", "ref": ref}), flush=True)
    print(f"  round {run}: {tool}: {measure}: {value:.1f} ms", file=sys.stderr, flush=True)

def pod_run(kind):
    """ms from spawn to the sandbox, to all 4 started, to all 4 ready."""
    t0 = time.time_ns()
    p = subprocess.Popen([wpod, "run", "--output", "json", f"{work}/{kind}.yaml"], env=env,
                         stdout=subprocess.PIPE, stderr=log)
    started, ready, sandbox, got = set(), set(), None, {}
    for line in p.stdout:
        t = time.time_ns()
        e = json.loads(line)
        if e.get("type") != "event":
            continue
        if e["event"] == "podStarted":
            sandbox = t
        elif e["event"] == "started":
            started.add(e["container"])
            if len(started) == 4:
                got["started"] = t
        elif e["event"] == "ready":
            ready.add(e["container"])
            if len(ready) == 4:
                got["ready"] = t
                break
        elif e["event"] in ("exited", "failedToStart", "podFinished"):
            break
    p.send_signal(signal.SIGTERM)
    for _ in p.stdout:
        pass
    p.wait(timeout=60)
    subprocess.run([wpod, "rm", "readybench"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    if "ready" not in got:
        raise RuntimeError(f"{kind}: not all containers became ready (started {started}, ready {ready}); see {work}/run.log")
    ms = lambda t: (t - t0) / 1e6
    return ms(sandbox), ms(got["started"]), ms(got["ready"])

def floor():
    t0 = time.time_ns()
    subprocess.run(["unshare", "-n", "-u", "-i", "-p", "-f", "--mount-proc", "true"], check=True)
    return (time.time_ns() - t0) / 1e6

NAMES = {"wasm": "wpod: native main + 3 Wasm sidecars", "native": "wpod: native main + 3 native sidecars"}
def measure(kind, rnd):
    time.sleep(gap)
    if kind == "floor":
        emit("unshare -n -u -i -p -f --mount-proc true (floor)", "pod: spawn to all 4 containers ready", floor(), rnd)
        return
    sandbox, started, ready = pod_run(kind)
    emit(NAMES[kind], "pod: spawn to all 4 containers ready", ready, rnd, ref=kind == "wasm")
    emit(NAMES[kind], "pod: spawn to all 4 containers started", started, rnd, ref=kind == "wasm")
    emit(NAMES[kind], "pod: spawn to sandbox ready (podStarted)", sandbox, rnd, ref=kind == "wasm")

kinds = ["wasm", "native", "floor"]
pod_run("wasm"); pod_run("native"); floor()  # warm-up
for rnd in range(rounds):
    k = rnd % len(kinds)
    for kind in kinds[k:] + kinds[:k]:
        measure(kind, rnd)
PY
