#!/usr/bin/env bash
# Many pods on one host: what each pod costs wpod (as root):
#
#   bench/pods.sh [-r ROUNDS] [-n "10 50 100 200"] [-u USER] WPOD
#
# For each N, N pods (private $WPOD_ROOT, each a native main container that sleeps and
# nothing else; the main container ends on SIGTERM, so a stop waits for no grace period) are
# started, on the default CNI network and, alternately, with `wpod.dev/network: none` (the pod's
# loopback only: wpod's own cost without the CNI plugins') and, third, off the network in a user
# namespace of their own (`hostUsers: false`: what the pod's own IDs cost beside the second),
# With -u USER (an ordinary user with subordinate IDs, and Debian's uidmap and passt), two more:
# the same pods run by USER, rootless (its own user namespace, `sandbox::rootless`), on pasta's
# network and with `wpod.dev/network: none`.
# one after another with `wpod run -d`, then listed, measured, stopped and removed:
#   start   wall time of the N `wpod run -d` (each returns once its pod has started) / N
#   memory  PSS of wpod's own processes of all N pods / N, from /proc/PID/smaps_rollup: the
#           supervisors (the processes whose environment has this run's WPOD_ROOT) and every
#           process below them (holders, shims, a rootless pod's pasta) but the containers'
#           own (`sh` and `sleep`)
#   ps      one `wpod ps` with the N pods running
#   stop    wall time of `wpod stop` and `wpod rm` of each pod / N
# ROUNDS rounds (default 3) of each N. One JSON object per figure on stdout (tool "wpod, CNI
# network", "wpod, wpod.dev/network: none" or "wpod, network: none, hostUsers: false", measure
# "pods: ... (N pods)"); progress on
# stderr. The issue 29 goal: per pod <= 2 MiB PSS and <= 5 ms to start, up to 200 pods.
set -euo pipefail
rounds=3 sizes="10 50 100 200" user=
while getopts "r:n:u:" opt; do
  case $opt in r) rounds=$OPTARG ;; n) sizes=$OPTARG ;; u) user=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
(($# == 1)) || { echo "usage: $0 [-r ROUNDS] [-n \"10 50 100 200\"] [-u USER] WPOD" >&2; exit 2; }
((EUID == 0)) || { echo "$0: needs root" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/bench/lib.sh"
wpod=$(realpath "$1")

work=$(mktemp -d /tmp/wpod-pods.XXXXXX)
chmod 755 "$work"
export WPOD_ROOT=$work/wpodroot
# The rootless pods' state: the user's own.
if [[ -n $user ]]; then
  install -d -o "$user" -m 0700 "$work/userroot"
  as_user=(setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups env WPOD_ROOT="$work/userroot")
fi
cleanup() {
  set +e
  local p run
  for run in "" ${user:+"${as_user[*]}"}; do
    for p in $($run "$wpod" ps -a --output json 2>/dev/null | python3 -c 'import json,sys; print(" ".join(p["name"] for p in json.load(sys.stdin)))' 2>/dev/null); do
      $run "$wpod" stop "$p" >/dev/null 2>&1
      $run "$wpod" rm "$p" >/dev/null 2>&1
    done
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "pods: $rounds rounds of N = $sizes, work $work"
python3 - "$wpod" "$work" "$rounds" "$user" $sizes <<'PY'
import json, os, pwd, subprocess, sys, time
wpod, work, rounds, user = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sizes = [int(n) for n in sys.argv[5:]]
log = open(f"{work}/run.log", "ab")

KINDS = {"cni": "wpod, CNI network", "none": "wpod, wpod.dev/network: none",
         "userns": "wpod, network: none, hostUsers: false"}
if user:
    KINDS.update({"rootless": "wpod rootless, pasta network",
                  "rootless-none": "wpod rootless, wpod.dev/network: none"})

def root_of(kind):
    return f"{work}/userroot" if kind.startswith("rootless") else f"{work}/wpodroot"

def emit(kind, measure, value, unit, run, n):
    print(json.dumps({"tool": KINDS[kind], "measure": f"pods: {measure} ({n} pods)", "value": round(value, 3),
                      "unit": unit, "run": run, "better": "lower", "ref": kind == "cni"}), flush=True)
    print(f"  round {run}, {n} pods, {kind}: {measure}: {value:.2f} {unit}", file=sys.stderr, flush=True)

def wpod_(kind, *args):
    env = {**os.environ, "WPOD_ROOT": root_of(kind)}
    command = [wpod, *args]
    if kind.startswith("rootless"):
        pw = pwd.getpwnam(user)
        command = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
                   *command]
        env["HOME"] = pw.pw_dir
    r = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=log)
    if r.returncode != 0:
        raise RuntimeError(f"wpod {' '.join(args)} exited {r.returncode}; see {work}/run.log")
    return r.stdout

def ours(kind):
    """PIDs of this run's wpod processes: their environment names its WPOD_ROOT."""
    needle = f"WPOD_ROOT={root_of(kind)}".encode()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(name))
        except OSError:
            pass
    return [p for p in pids if p != os.getpid()]

def tree(tops):
    """`tops` and every process below them but the containers' own (sh, sleep)."""
    parent, comm = {}, {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    s = f.read()
            except OSError:
                continue
            comm[int(name)] = s[s.index("(") + 1:s.rindex(")")]
            parent[int(name)] = int(s[s.rindex(")") + 2:].split()[1])
    found = set(tops)
    grew = True
    while grew:
        new = {p for p, pp in parent.items() if pp in found and p not in found}
        found |= new
        grew = bool(new)
    return [p for p in found if comm.get(p) not in ("sh", "sleep")]

def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(l.split()[1]) for l in f if l.startswith("Pss:"))
    except OSError:
        return 0

def manifest(i, kind):
    path = f"{work}/pod{i}.yaml"
    none = ", annotations: {wpod.dev/network: none}" if kind not in ("cni", "rootless") else ""
    users = "  hostUsers: false\n" if kind == "userns" else ""
    with open(path, "w") as f:
        f.write(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: many-{i}{none}}}\nspec:\n{users}"
                "  terminationGracePeriodSeconds: 0\n  containers:\n  - name: main\n"
                "    command: [sh, -c, 'trap \"exit 0\" TERM; sleep infinity & wait']\n")
    return path

def measure(rnd, n, kind):
        files = [manifest(i, kind) for i in range(n)]
        t0 = time.monotonic()
        for f in files:
            wpod_(kind, "run", "-d", f)
        start = (time.monotonic() - t0) * 1000 / n
        time.sleep(1)  # settle: each pod's start-up work done
        pids = tree(ours(kind))
        mem = sum(pss_kib(p) for p in pids) / 1024 / n
        t0 = time.monotonic()
        listed = wpod_(kind, "ps", "--output", "json")
        ps = (time.monotonic() - t0) * 1000
        running = sum(1 for p in json.loads(listed) if p.get("name", "").startswith("many-"))
        if running != n:
            raise RuntimeError(f"wpod ps lists {running} of {n} pods")
        t0 = time.monotonic()
        for i in range(n):
            wpod_(kind, "stop", f"many-{i}")
            wpod_(kind, "rm", f"many-{i}")
        stop = (time.monotonic() - t0) * 1000 / n
        emit(kind, "start per pod (wpod run -d)", start, "ms", rnd, n)
        emit(kind, "wpod's PSS per pod", mem, "MiB", rnd, n)
        emit(kind, "wpod ps", ps, "ms", rnd, n)
        emit(kind, "stop and rm per pod", stop, "ms", rnd, n)
        print(f"  ({len(pids)} wpod processes for {n} pods)", file=sys.stderr, flush=True)

for rnd in range(rounds):
    for n in sizes:
        kinds = list(KINDS)
        for kind in kinds[rnd % len(kinds):] + kinds[:rnd % len(kinds)]:
            measure(rnd, n, kind)
PY
