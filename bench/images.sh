#!/usr/bin/env bash
# Image pull and start, wpod beside podman, from the same local registry (as root):
#
#   bench/images.sh [-r ROUNDS] WPOD
#
# Serves the test images (tests/images/build.sh: Debian's nginx on busybox, 2 layers, 5.4 MB
# compressed) from a docker-registry on 127.0.0.1:5077. Each round, interleaved:
#   wpod   cold pull: `wpod pull nginx` into an empty store (download, verify, unpack)
#          start:     `wpod run` of a pod running `nginx -v` from the stored image, to its exit
#   podman cold pull: `podman pull` into empty storage (--root/--runroot of its own)
#          start:     `podman run --rm --network none IMAGE nginx -v`, to its exit
# Prints the median of each in milliseconds, and the disk the store uses with nginx and busybox
# (which share busybox's layer) against their two images' sizes apart.
set -euo pipefail
rounds=5
while getopts "r:" opt; do
  case $opt in r) rounds=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
wpod=$(realpath "${1:?usage: $0 [-r ROUNDS] WPOD}")
root=$(cd "$(dirname "$0")/.." && pwd)
command -v podman >/dev/null && command -v runc >/dev/null || { echo "podman and runc are needed for the comparison (apt install podman runc)" >&2; exit 2; }
work=$(mktemp -d /tmp/wpod-imagebench.XXXXXX)
export WPOD_TEST_REGISTRY=127.0.0.1:5077
cleanup() {
  for d in "$work"/podman-[0-9]*; do
    [ -d "$d" ] || continue
    podman --root "$d/root" --runroot "$d/run" system reset --force >/dev/null 2>&1 || true
    umount -R "$d/root/overlay" 2>/dev/null || true
  done
  bash "$root/tests/images/serve.sh" stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
bash "$root/tests/images/serve.sh" >/dev/null
export WPOD_REGISTRIES_CONF=/tmp/wpod-test-registry/registries.conf
image=$WPOD_TEST_REGISTRY/library/nginx:latest
cat > "$work/pod.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: {name: imagebench}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: nginx
    imagePullPolicy: Never
    command: [nginx, -v]
YAML
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Each round gets empty podman storage of its own (podman keeps its overlay mounted).
podman_in() { podman --root "$work/podman-$round/root" --runroot "$work/podman-$round/run" --storage-driver overlay "$@"; }
: > "$work/wpod-pull"; : > "$work/wpod-run"; : > "$work/podman-pull"; : > "$work/podman-run"
for round in $(seq "$rounds"); do
  rm -rf "$work/wpodroot"; mkdir -p "$work/wpodroot"
  WPOD_ROOT=$work/wpodroot ms "$wpod" pull nginx >> "$work/wpod-pull"
  WPOD_ROOT=$work/wpodroot ms "$wpod" run "$work/pod.yaml" >> "$work/wpod-run"
  ms podman_in pull --tls-verify=false "$image" >> "$work/podman-pull"
  # runc: crun refuses this hybrid cgroup v1/v2 host; the ulimits are what wpod's shell allows.
  ms podman_in --runtime runc run --rm --network none --ulimit nofile=1024:1024 \
    --ulimit nproc=4096:4096 "$image" nginx -v >> "$work/podman-run"
done
WPOD_ROOT=$work/wpodroot "$wpod" pull busybox >/dev/null 2>&1
store=$(du -sb "$work/wpodroot/images/layers" | cut -f1)
shared=$(WPOD_ROOT=$work/wpodroot "$wpod" images --output json | python3 -c '
import json, sys
images = {i["name"]: i for i in json.load(sys.stdin)}
print(images["docker.io/library/busybox:latest"]["layers"][0].split(":")[1])')
shared_bytes=$(du -sb "$work/wpodroot/images/layers/$shared" | cut -f1)
printf '%-8s %12s %12s\n' "" "cold pull ms" "start ms"
printf '%-8s %12s %12s\n' wpod "$(median < "$work/wpod-pull")" "$(median < "$work/wpod-run")"
printf '%-8s %12s %12s\n' podman "$(median < "$work/podman-pull")" "$(median < "$work/podman-run")"
echo "store with nginx + busybox: $store bytes of unpacked layers; each image apart: $((store + shared_bytes)) (busybox's $shared_bytes-byte layer stored once)"
