#!/usr/bin/env bash
# Pod networking (issue 24), side by side (as root):
#
#   bench/net.sh [-r ROUNDS] [-d SECONDS] WPOD
#
# Runs in a network namespace of its own (re-executed under `unshare --net`, loopback up, no
# route out), with wpod's CNI configuration in a temporary directory: the bridge, NAT rules and
# test hosts it makes go with it, and no packet can reach this machine's real network.
#
#   pod to pod    wrk in pod A's network namespace against nginx in pod B (by its IP, over
#                 wpod's default CNI bridge) vs the same wrk and nginx in two network
#                 namespaces joined by a bare veth pair: keep-alive 1 KiB (req/s and p50
#                 latency) and 1 MiB (MiB/s), 1 connection.
#   setup         `wpod run` of a one-container pod (`true`) on its CNI network and with
#                 `hostNetwork: true`, against `podman kube play` + `pod rm -f -t 0` of the
#                 same pod with podman's CNI network and with `--network host` (runc, a busybox
#                 image imported into a private store). The difference is what the network
#                 costs a pod (ADD + DEL and what goes with them).
#   egress        1 GiB sent from a pod to a "remote" host (a namespace on 198.51.100.0/30
#                 behind the node, through the pod's NAT), received by a Python sink that times
#                 first byte to last: by a native container (python3, 256 KiB sendall) and by a
#                 Wasm sidecar (the probe's `blast`: Rust std's TcpStream, 256 KiB writes).
#
# ROUNDS rounds (default 5), SECONDS per wrk run (default 3), the order of the tools rotating
# from round to round. One JSON object per run on stdout (bench/report.py), progress on stderr.
set -euo pipefail
rounds=5 duration=3
while getopts "r:d:" opt; do
  case $opt in r) rounds=$OPTARG ;; d) duration=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
(($# == 1)) || { echo "usage: $0 [-r ROUNDS] [-d SECONDS] WPOD" >&2; exit 2; }
((EUID == 0)) || { echo "$0: needs root" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/bench/lib.sh"
wpod=$(realpath "$1")
install_peers nginx wrk socat podman runc nsenter python3 busybox
[ -f "$root/target/sidecars/probe.wasm" ] || { echo "target/sidecars is missing: cargo build -p wpod-test-support" >&2; exit 2; }

if [ -z "${WPOD_BENCH_ISOLATED:-}" ]; then
  export WPOD_BENCH_ISOLATED=1
  exec unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh bash "$0" -r "$rounds" -d "$duration" "$wpod"
fi

work=$(mktemp -d /tmp/wpod-net.XXXXXX)
# Under bench/run.sh, the suite's one configuration (one bridge for all its scripts).
export WPOD_ROOT=$work/wpodroot WPOD_CNI_CONF_DIR=${WPOD_CNI_CONF_DIR:-$work/net.d}
cleanup() {
  set +e
  "$wpod" ps -a --output json 2>/dev/null | python3 -c 'import json,sys; [print(p["name"]) for p in json.load(sys.stdin)]' |
    while read -r p; do "$wpod" stop "$p" >/dev/null 2>&1; "$wpod" rm "$p" >/dev/null 2>&1; done
  "$wpod" pod prune >/dev/null 2>&1
  for ns in wpb-a wpb-b wpb-remote; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "net: $rounds rounds, wrk ${duration}s, work $work"
python3 "$root/bench/net.py" "$wpod" "$work" "$rounds" "$duration" "$root/target/sidecars/probe.wasm"
