#!/usr/bin/env bash
# Memory per idle sidecar in a real pod: N Wasm sidecars against N crun / podman containers
# running `sleep` (as root):
#
#   bench/density.sh [-r RUNS] [-n "1 10 100"] [-L] WPOD
#
# PSS (proportional set size: shared pages divided among the processes that map them) from
# /proc/PID/smaps_rollup, summed over:
#   wpod     a pod (`wpod run -d`, private $WPOD_ROOT) with a native main container `sleep
#            infinity` and N idle Wasm sidecars (target/sidecars/probe.wasm `ready
#            wait-stopping`); every process of the pod: the supervisor (which hosts wasmtime
#            and the sidecars), the holder, the shims, the main container; minus the same pod
#            with 0 sidecars, measured in the same run
#            At N = 1 also the anonymous memory (smaps_rollup's Anonymous) of the supervisor
#            alone, minus the 0-sidecar pod's: what the first sidecar costs wpod itself
#   crun     N `crun run -d` of an OCI bundle (busybox `sleep`, each its own namespaces, network
#            included; crun in a private mount namespace without the cgroup2 hierarchy, see
#            bench/lib.sh): the container processes (crun leaves nothing else running)
#   podman   N `podman run -d --network none` (runc, private store) of the same rootfs: each
#            container's process and its conmon
# divided by the number actually running (wpod: `wpod ps` says running and ready for each;
# crun/podman: their state says running). Value: KiB per sidecar. Kernel memory (page tables,
# namespaces, cgroups, sockets) is not in PSS, for any of them.
# RUNS runs (default 3) of each N (default "1 10 100"), tools rotating. -L also checks wpod's
# limit: a pod asking for 101 Wasm sidecars, and how many of them run.
# One JSON object per run on stdout; progress on stderr.
set -euo pipefail
runs=3 sizes="1 10 100" limit=0
while getopts "r:n:L" opt; do
  case $opt in r) runs=$OPTARG ;; n) sizes=$OPTARG ;; L) limit=1 ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
(($# == 1)) || { echo "usage: $0 [-r RUNS] [-n \"1 10 100\"] [-L] WPOD" >&2; exit 2; }
((EUID == 0)) || { echo "$0: needs root" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/bench/lib.sh"
wpod=$(realpath "$1")
probe=$root/target/sidecars/probe.wasm
[ -f "$probe" ] || { echo "$probe is missing: build the guests (cargo build -p wpod-test-support)" >&2; exit 2; }
install_peers crun runc podman busybox python3 nsenter

work=$(mktemp -d /tmp/wpod-density.XXXXXX)
export WPOD_ROOT=$work/wpodroot
podman_private "$work/podman"
cleanup() {
  set +e
  wpod_pods_cleanup "$wpod" densitybench densitybench-limit
  for id in $(crun list -q 2>/dev/null | grep '^densitybench-'); do
    nsenter --mount="$work/ns/mnt" crun delete -f "$id" >/dev/null 2>&1
  done
  podman_private_cleanup "$work/podman"
  crun_mntns_teardown "$work/ns"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

make_bundle "$work/bundle" own /bin/busybox sleep 1000000
tar -C "$work/bundle/rootfs" -cf "$work/rootfs.tar" .
"${PODMAN[@]}" import "$work/rootfs.tar" localhost/wpod-bench-sleep:1 >/dev/null 2>&1
crun_mntns_setup "$work/ns"

say "density: sizes $sizes, $runs runs, work $work"
python3 - "$wpod" "$work" "$runs" "$sizes" "$probe" "$limit" "$(IFS=$'\x1f'; echo "${PODMAN[*]}")" <<'PY'
import json, os, subprocess, sys, time
wpod, work, runs, sizes, probe, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(x) for x in sys.argv[4].split()], sys.argv[5], sys.argv[6] == "1"
podman = sys.argv[7].split("\x1f")
env = {**os.environ, "WPOD_ROOT": f"{work}/wpodroot"}
log = open(f"{work}/run.log", "ab")
MNTNS = f"{work}/ns/mnt"

def sh(argv, **kw):
    return subprocess.run(argv, env=env, stderr=log, check=True, **kw)

def out(argv):
    return sh(argv, stdout=subprocess.PIPE, text=True).stdout

def pss_kib(pids):
    total = 0
    for p in pids:
        with open(f"/proc/{p}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total

def anon_kib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("Anonymous:"))

def tree(pid):
    kids = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p))
    res, todo = [], [pid]
    while todo:
        p = todo.pop()
        res.append(p)
        todo.extend(kids.get(p, []))
    return res

TOTALS = {}  # (tool, run) -> {n: (total PSS KiB, running)}

def emit(tool, n, per, run, **extra):
    TOTALS.setdefault((tool, run), {})[n] = (extra["pss_kib"], extra["running"])
    print(json.dumps({"tool": tool, "measure": f"density: PSS per idle sidecar, {n} per pod/host",
                      "value": round(per, 1), "unit": "KiB", "run": run, "better": "lower",
                      "ref": tool.startswith("wpod"), "n": n, **extra}), flush=True)
    print(f"  run {run}: {tool} N={n}: {per:.1f} KiB per sidecar {extra}", file=sys.stderr, flush=True)

def wpod_pod(name, n, main="sleep infinity"):
    text = f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {{name: main, command: [{", ".join(main.split())}]}}
""" + "".join(f"  - {{name: s{i}, image: {probe}, args: [ready, wait-stopping]}}\n" for i in range(n))
    path = f"{work}/{name}-{n}.yaml"
    open(path, "w").write(text)
    return path

def wpod_up(name, n, need_all=True):
    """Runs the pod detached; waits until its containers are running and ready (or 20 s);
    returns (supervisor pid, how many sidecars are running and ready)."""
    sh([wpod, "run", "-d", wpod_pod(name, n)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        pods = json.loads(out([wpod, "ps", "--output", "json"]))
        cs = next(p["containers"] for p in pods if p["name"] == name)
        ok = [c for c in cs if c["state"] == "running" and c["ready"] and c["name"] != "main"]
        main_ok = any(c["name"] == "main" and c["state"] == "running" for c in cs)
        if main_ok and len(ok) == n or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if need_all and len(ok) != n:
        raise RuntimeError(f"{name}: {len(ok)} of {n} sidecars running and ready")
    time.sleep(1)  # settle: the sidecars' first page faults, the supervisor's allocations
    sup = json.loads(out([wpod, "describe", name, "--output", "json"]))["plan"]["pid"]
    return sup, len(ok)

def wpod_down(name):
    sh([wpod, "stop", "-t", "0", name], stdout=subprocess.DEVNULL)
    sh([wpod, "rm", name], stdout=subprocess.DEVNULL)

def measure_wpod(n, run):
    sup0, _ = wpod_up("densitybench", 0)
    base, anon0 = pss_kib(tree(sup0)), anon_kib(sup0)
    wpod_down("densitybench")
    sup, running = wpod_up("densitybench", n)
    total, anon = pss_kib(tree(sup)), anon_kib(sup)
    sup_only = pss_kib([sup])
    wpod_down("densitybench")
    emit("wpod (Wasm sidecars)", n, (total - base) / running, run, running=running, pss_kib=total,
         pss_kib_0=base, supervisor_pss_kib=sup_only)
    if n == 1 and running == 1:
        # Issue 29's other density goal: what the first sidecar costs the pod's wpod process
        # (the engine, its pool, the runtime's threads, the component), in anonymous memory.
        print(json.dumps({"tool": "wpod (Wasm sidecars)", "measure": "density: anonymous memory the first sidecar adds to wpod",
                          "value": anon - anon0, "unit": "KiB", "run": run, "better": "lower", "ref": True,
                          "anonymous_kib": anon, "anonymous_kib_0": anon0}), flush=True)
        print(f"  run {run}: the first sidecar adds {anon - anon0} KiB of anonymous memory to wpod", file=sys.stderr, flush=True)

def in_mntns():
    import ctypes
    fd = os.open(MNTNS, os.O_RDONLY)
    if ctypes.CDLL(None).setns(fd, 0x00020000) != 0:
        os._exit(121)

def measure_crun(n, run):
    ids = [f"densitybench-{run}-{n}-{i}" for i in range(n)]
    try:
        for i in ids:
            subprocess.run(["crun", "run", "-d", "-b", f"{work}/bundle", i], stdout=subprocess.DEVNULL,
                           stderr=log, check=True, preexec_fn=in_mntns)
        time.sleep(1)
        pids = []
        for i in ids:
            st = json.loads(subprocess.run(["crun", "state", i], capture_output=True, text=True, check=True,
                                           preexec_fn=in_mntns).stdout)
            if st["status"] == "running":
                pids.append(st["pid"])
        total = pss_kib(pids)
    finally:
        for i in ids:
            subprocess.run(["crun", "delete", "-f", i], stdout=subprocess.DEVNULL, stderr=log, preexec_fn=in_mntns)
    emit("crun (sleep)", n, total / len(pids), run, running=len(pids), pss_kib=total)

def measure_podman(n, run):
    names = [f"densitybench-{run}-{n}-{i}" for i in range(n)]
    try:
        for c in names:
            sh(podman + ["run", "-d", "--name", c, "--network", "none", "--ulimit", "nofile=1024:1024",
                         "--ulimit", "nproc=4096:4096", "localhost/wpod-bench-sleep:1",
                         "/bin/busybox", "sleep", "1000000"], stdout=subprocess.DEVNULL)
        time.sleep(1)
        pids = []
        for line in out(podman + ["inspect", "--format", "{{.State.Running}} {{.State.Pid}} {{.State.ConmonPid}}"] + names).split("\n"):
            if line.startswith("true "):
                pids += [int(x) for x in line.split()[1:]]
        total = pss_kib(pids)
    finally:
        subprocess.run(podman + ["rm", "-f", "-t", "0"] + names, stdout=subprocess.DEVNULL, stderr=log)
    emit("podman (runc, sleep + conmon)", n, total / (len(pids) // 2), run, running=len(pids) // 2, pss_kib=total)

tools = [measure_wpod, measure_crun, measure_podman]
# The component compiled into this WPOD_ROOT's cache first, unmeasured: every run then measures
# warm sidecars (a first pod that compiles keeps Cranelift's ~16 MiB, and its N = 1 said so).
wpod_up("densitybench", 1)
wpod_down("densitybench")
for run in range(runs):
    for j, n in enumerate(sizes):
        k = (run + j) % len(tools)
        for t in tools[k:] + tools[:k]:
            t(n, run)

# The cost of one more sidecar: from the smallest N to the largest, in the same run.
if len(sizes) > 1:
    lo, hi = min(sizes), max(sizes)
    for (tool, run), by_n in TOTALS.items():
        (p_lo, r_lo), (p_hi, r_hi) = by_n[lo], by_n[hi]
        if r_hi > r_lo:
            print(json.dumps({"tool": tool, "measure": f"density: PSS per additional idle sidecar, {lo} to {hi}",
                              "value": round((p_hi - p_lo) / (r_hi - r_lo), 1), "unit": "KiB", "run": run,
                              "better": "lower", "ref": tool.startswith("wpod")}), flush=True)

if limit:
    # wpod's limit: 100 Wasm sidecars per process (the pooling allocator's instances).
    sup, running = wpod_up("densitybench-limit", 101, need_all=False)
    evs = out([wpod, "events", "densitybench-limit"])
    trapped_names = sorted({l.split("container/", 1)[1].split()[0] for l in evs.splitlines() if "Trapped" in l})
    why = out([wpod, "logs", "--tail", "3", "-c", trapped_names[0], "densitybench-limit"]) if trapped_names else ""
    wpod_down("densitybench-limit")
    print(f"  trapped: {trapped_names}; its last lines: {why.strip()}", file=sys.stderr, flush=True)
    print(json.dumps({"tool": "wpod (Wasm sidecars)", "measure": "density: Wasm sidecars running of 101 asked",
                      "value": running, "unit": "sidecars", "run": 0, "better": "higher", "ref": True}), flush=True)
    trapped = [l for l in evs.splitlines() if "Trapped" in l or "exited" in l][:3]
    print(f"  101 asked: {running} running and ready; {trapped}", file=sys.stderr, flush=True)
PY
