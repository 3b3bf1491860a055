#!/usr/bin/env bash
# Spawn to first connect of one container or sidecar, wpod beside the usual runtimes (as root):
#
#   bench/start-peers.sh [-r ROUNDS] [-n BENCH_RUNS] WPOD
#
# A TCP listener records when the new container's first connection is accepted; the time is
# counted from just before the spawn of the command that makes the container. The client is the
# same everywhere: `bash -c 'exec 3<>/dev/tcp/127.0.0.1/PORT'` (for wpod's Wasm sidecar: the
# probe guest, target/sidecars/probe.wasm, with `connect:127.0.0.1:PORT`).
#
#   process            the client itself, spawned from the measuring process (the floor)
#   runc run           an OCI bundle (rootfs: bash and its libraries, busybox), the host's
#                      network namespace; runc creates its cgroups (v1)
#   crun run           the same bundle. crun 1.8 refuses a hybrid cgroup v1/v2 host ("cgroups in
#                      hybrid mode not supported, drop all controllers from cgroupv2", even with
#                      --cgroup-manager=disabled): it runs in a private mount namespace of this
#                      script where /sys/fs/cgroup/unified is unmounted (nothing else changes)
#   podman run (runc)  `podman run --rm --network host` of the same rootfs, `podman import`ed
#                      into a private store (--root/--runroot of its own); runtime runc (podman's
#                      default here is crun, which fails as above)
#   wpod apply         a Wasm sidecar added by `wpod apply` to a running pod whose native main
#                      container is the listener (a sidecar may reach only its pod's loopback);
#                      warm (its compiled cache entry exists) and cold (a copy of the component
#                      with a custom section of its own: other bytes, so compiled afresh)
#   control socket     the same warm change asked of the pod's control socket by this script,
#     apply            a client that keeps running (no process spawned; docs/operators.md)
#   wpod run           a whole pod: the listener as a native sidecar (its postStart hook waits
#                      until it is bound, so the client starts after it), the client a Wasm
#                      sidecar (warm, cold) or a native container (bash); reported as spawn of
#                      `wpod run` to the connect, and as the listener bound to the connect
#   wpod bench         `wpod bench --json --runs BENCH_RUNS`: the in-process figures (cold, warm,
#                      restart to first connect), one row per round (the median of its runs)
#
# ROUNDS rounds (default 11), the tools' order rotating each round, after one warm-up of each.
# One JSON object per run on stdout (tool, measure, value in ms, run); progress on stderr.
set -euo pipefail
rounds=11 bench_runs=10
while getopts "r:n:" opt; do
  case $opt in r) rounds=$OPTARG ;; n) bench_runs=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
(($# == 1)) || { echo "usage: $0 [-r ROUNDS] [-n BENCH_RUNS] WPOD" >&2; exit 2; }
((EUID == 0)) || { echo "$0: needs root" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/bench/lib.sh"
wpod=$(realpath "$1")
probe=$root/target/sidecars/probe.wasm
[ -f "$probe" ] || { echo "$probe is missing: build the guests (cargo build -p wpod-test-support)" >&2; exit 2; }
install_peers crun runc podman busybox python3 nsenter

port=$((20000 + RANDOM % 10000))
work=$(mktemp -d /tmp/wpod-startpeers.XXXXXX)
export WPOD_ROOT=$work/wpodroot
podman_private "$work/podman"
podman_cmd=("${PODMAN[@]}")
cleanup() {
  set +e
  wpod_pods_cleanup "$wpod" startbench startbench-pod
  # crun and runc remove their containers when `run` returns; anything a failure left:
  for rt in runc crun; do
    for id in $($rt list -q 2>/dev/null | grep '^wpodbench-'); do
      if [ "$rt" = crun ]; then nsenter --mount="$work/ns/mnt" crun delete -f "$id"; else runc delete -f "$id"; fi
    done
  done >/dev/null 2>&1
  podman_private_cleanup "$work/podman"
  crun_mntns_teardown "$work/ns"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The client: an OCI bundle with bash and busybox, in the host's network namespace; the same
# rootfs imported into podman's store; crun's mount namespace.
client=(/bin/bash -c "exec 3<>/dev/tcp/127.0.0.1/$port")
make_bundle "$work/bundle" host "${client[@]}"
tar -C "$work/bundle/rootfs" -cf "$work/rootfs.tar" .
"${podman_cmd[@]}" import "$work/rootfs.tar" localhost/wpod-bench-client:1 >/dev/null 2>&1
crun_mntns_setup "$work/ns"

# wpod: the listener (native, python3) for the pods, in a hostPath volume with its records.
mkdir -p "$work/b" "$work/pods"
cat > "$work/b/listen.py" <<'PY'
# listen.py PORT OUT: writes OUT.bound (time_ns once bound), then appends each accept's time_ns
# to OUT; SIGTERM ends it (as a container's first process it would otherwise ignore it).
import signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
port, out = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(64)
with open(out + ".bound", "w") as f:
    f.write(f"{time.time_ns()}\n")
while True:
    c, _ = s.accept()
    t = time.time_ns()
    with open(out, "a") as f:
        f.write(f"{t}\n")
    c.close()
PY
cfg=$(python3 -c 'import json, sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
  wpod "$wpod" work "$work" rounds "$rounds" port "$port" bench_runs "$bench_runs" \
  mntns "$work/ns/mnt" bundle "$work/bundle" image localhost/wpod-bench-client:1 probe "$probe")
cfg=$(python3 -c 'import json, sys; c = json.loads(sys.argv[1]); c["podman"] = sys.argv[2].split("\x1f"); c["client"] = sys.argv[3].split("\x1f"); print(json.dumps(c))' \
  "$cfg" "$(IFS=$'\x1f'; echo "${podman_cmd[*]}")" "$(IFS=$'\x1f'; echo "${client[*]}")")

say "start-peers: $rounds rounds, port $port, work $work"
python3 "$root/bench/start_peers.py" "$cfg"
