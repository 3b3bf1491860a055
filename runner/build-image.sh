#!/bin/bash
# The runner image of a Wasm sidecar on Kubernetes, offline: wpod (debug info stripped) and the
# shared libraries it links (no shell, nothing else), the component at /wpod/component.wasm and
# its compiled code at /wpod/precompiled, the mount points `wpod kube generate` gives the
# runner container, user 65532. Written as an OCI
# image archive (an OCI layout in a tar: `ctr images import`, `skopeo copy oci-archive:...`),
# reproducibly: the same inputs give the same digests.
#
#   runner/build-image.sh --wpod target/release/wpod --component sidecar.wasm \
#       --name registry.example/team/sidecar-runner:1.0 --out runner.tar
#
# Prints mkimage.py's JSON line: name, manifest_digest (pin the image by it), config and
# layer digests.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() { echo "usage: build-image.sh --wpod BIN --component FILE --name NAME --out TAR" >&2; exit 64; }
wpod= component= name= out=
while (($#)); do
  case $1 in
    --wpod) wpod=$2; shift 2 ;;
    --component) component=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) usage ;;
  esac
done
[[ -n $wpod && -n $component && -n $name && -n $out ]] || usage
[[ -x $wpod ]] || { echo "build-image.sh: $wpod is not an executable" >&2; exit 1; }
[[ -f $component ]] || { echo "build-image.sh: no component at $component" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Debug info is most of a debug build and none of what runs.
objcopy --strip-debug "$wpod" "$work/wpod"
# The component compiled by this wpod, so that the container starts without compiling (an
# entry another CPU cannot load is compiled at start instead). The image is read-only: its
# MAC key may be readable by the runner's user.
WPOD_ROOT=$work/root "$wpod" compile "$component" >&2
args=(
  --add "$work/wpod:/usr/local/bin/wpod:0755"
  --add "$component:/wpod/component.wasm:0644"
  --dir /etc/wpod --dir /var/run/wpod:0755
  --entrypoint '["/usr/local/bin/wpod"]'
  --user 65532:65532
  --label org.opencontainers.image.title=wpod-sidecar-runner
)
for f in "$work"/root/cache/*; do
  args+=(--add "$f:/wpod/precompiled/${f##*/}:0644")
done
# The dynamic loader and the libraries, at the paths the binary names them by.
for lib in $(ldd "$wpod" | grep -oE '/[^ ]+\.so[^ ]*' | sort -u); do
  args+=(--add "$(readlink -f "$lib"):$lib:0755")
done
exec /usr/bin/python3 "$HERE/mkimage.py" --out "$out" --name "$name" "${args[@]}"
