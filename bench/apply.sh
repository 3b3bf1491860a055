#!/usr/bin/env bash
# A live sidecar replace against the alternatives users have today (as root):
#
#   bench/apply.sh [-r ROUNDS] WPOD
#
# One pod: nginx as the main container (the test image, Debian's nginx on busybox, from a local
# docker-registry on 127.0.0.1:5077, for wpod and podman alike) on hostPort 18591, and a sidecar
# on hostPort 19591 that answers GET /metrics with its version. Each round replaces the sidecar
# with the other version, alternately, and measures the time from the command's start until the
# new version answers on the same port (polled every 2 ms), while a client requests nginx's page
# without pause, a new connection each (bench/apply.py): its failures and latency in each
# replace window (to 0.5 s after the new version answers), against 2 s without a change.
#
#   wpod apply              Wasm sidecar proc-monitor <-> redis-exporter (both on LISTEN :9400),
#                           `wpod apply FILE` on the running pod
#   wpod stop + run -d      the same pods restarted whole: `wpod stop; wpod rm; wpod run -d FILE`
#   podman kube play        a busybox httpd sidecar whose env says its version, replaced with
#     --replace             `podman kube play --replace FILE` (podman recreates the pod)
#
# Prints JSON and a table: replace time median (range), the main container's p50/p99/max
# latency during the replaces, and its failed requests.
set -euo pipefail
rounds=6
while getopts "r:" opt; do
  case $opt in r) rounds=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
wpod=$(realpath "${1:?usage: $0 [-r ROUNDS] WPOD}")
root=$(cd "$(dirname "$0")/.." && pwd)
sidecars=$root/target/sidecars
[ -f "$sidecars/proc-monitor.wasm" ] || { echo "build the guests first (cargo test --workspace --no-run builds them into target/sidecars)" >&2; exit 2; }
command -v podman >/dev/null && command -v runc >/dev/null && command -v catatonit >/dev/null || { echo "podman, runc and catatonit are needed for the comparison (apt install podman runc catatonit)" >&2; exit 2; }
work=$(mktemp -d /tmp/wpod-applybench.XXXXXX)
export WPOD_TEST_REGISTRY=127.0.0.1:5077
export WPOD_ROOT=$work/wpodroot
# runc: crun refuses this hybrid cgroup v1/v2 host; the ulimits are what wpod's shell allows.
cat > "$work/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
CONF
export CONTAINERS_CONF=$work/containers.conf
podman_in() { podman --root "$work/podman/root" --runroot "$work/podman/run" --storage-driver overlay --runtime runc "$@"; }
cleanup() {
  "$wpod" stop -t 1 applybench >/dev/null 2>&1 || true
  "$wpod" rm applybench >/dev/null 2>&1 || true
  podman_in kube down "$work/podman-1.yaml" >/dev/null 2>&1 || true
  podman_in system reset --force >/dev/null 2>&1 || true
  umount -R "$work/podman/root/overlay" 2>/dev/null || true
  bash "$root/tests/images/serve.sh" stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
bash "$root/tests/images/serve.sh" >/dev/null
export WPOD_REGISTRIES_CONF=/tmp/wpod-test-registry/registries.conf
"$wpod" pull nginx >/dev/null
podman_in pull --tls-verify=false "$WPOD_TEST_REGISTRY/library/nginx:latest" >/dev/null
podman_in pull --tls-verify=false "$WPOD_TEST_REGISTRY/library/busybox:latest" >/dev/null

wpod_pod() { # $1: the sidecar's component
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: applybench}
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: nginx
    imagePullPolicy: Never
    command: [nginx, -g, "daemon off;"]
    ports: [{containerPort: 80, hostPort: 18591, hostIP: 127.0.0.1}]
  - name: exporter
    image: $sidecars/$1
    env: [{name: LISTEN, value: "0.0.0.0:9400"}]
    ports: [{containerPort: 9400, hostPort: 19591, hostIP: 127.0.0.1}]
    resources: {limits: {memory: 32Mi}}
YAML
}
podman_pod() { # $1: the sidecar's version
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: applybench-podman}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: $WPOD_TEST_REGISTRY/library/nginx:latest
    command: [nginx, -g, "daemon off;"]
    ports: [{containerPort: 80, hostPort: 18591, hostIP: 127.0.0.1}]
  - name: exporter
    image: $WPOD_TEST_REGISTRY/library/busybox:latest
    command: [sh, -c, "mkdir -p /w && echo version \$V > /w/metrics && exec httpd -f -p 9400 -h /w"]
    env: [{name: V, value: "$1"}]
    ports: [{containerPort: 9400, hostPort: 19591, hostIP: 127.0.0.1}]
YAML
}
wpod_pod proc-monitor.wasm > "$work/wpod-1.yaml"
wpod_pod redis-exporter.wasm > "$work/wpod-2.yaml"
podman_pod 1 > "$work/podman-1.yaml"
podman_pod 2 > "$work/podman-2.yaml"
w=$wpod
pm="podman --root $work/podman/root --runroot $work/podman/run --storage-driver overlay --runtime runc"
cases=$(python3 - "$w" "$work" "$pm" <<'PY'
import json, sys
w, work, pm = sys.argv[1:]
restart = lambda n: f"{w} stop applybench >/dev/null && {w} rm applybench >/dev/null && {w} run -d {work}/wpod-{n}.yaml"
play = lambda n: f"{pm} kube play --replace --tls-verify=false {work}/podman-{n}.yaml"
print(json.dumps([
    # Both versions compiled before the clock starts: a dry run on the running pod prepares
    # (and caches) the other.
    {"name": "wpod apply", "start": f"{w} apply {work}/wpod-1.yaml && {w} apply --dry-run {work}/wpod-2.yaml",
     "replace": [f"{w} apply {work}/wpod-1.yaml", f"{w} apply {work}/wpod-2.yaml"],
     "markers": ["wpod_container_up", "redis_up"], "stop": f"{w} stop applybench && {w} rm applybench"},
    {"name": "wpod stop + run -d", "start": f"{w} run -d {work}/wpod-1.yaml",
     "replace": [restart(1), restart(2)],
     "markers": ["wpod_container_up", "redis_up"], "stop": f"{w} stop applybench && {w} rm applybench"},
    {"name": "podman kube play --replace", "start": play(1),
     "replace": [play(1), play(2)],
     "markers": ["version 1", "version 2"], "stop": f"{pm} kube down {work}/podman-1.yaml"},
]))
PY
)
python3 "$root/bench/apply.py" "$rounds" "$cases"
