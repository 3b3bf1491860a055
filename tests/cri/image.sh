#!/bin/bash
# Build an OCI image from local files (mkimage.py, no network) and import it into the
# harness's containerd (namespace k8s.io, where the CRI looks), then wait until the CRI
# lists it. Prints mkimage.py's JSON line (name and digests).
#
#   tests/cri/image.sh DIR NAME [mkimage.py options...]
#   tests/cri/image.sh DIR NAME --archive TAR     (an OCI archive: wpod kube build --archive)
#   e.g. tests/cri/image.sh /tmp/crit localhost/crit/runner:dev \
#          --add ./wpod:/wpod:0755 --add ./app.wasm:/app/app.wasm:0644 --dir /tmp:1777 \
#          --entrypoint '["/wpod","sidecar"]' --user 65534:65534
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 2 ] || { echo "usage: image.sh DIR NAME [mkimage.py options...]" >&2; exit 64; }
DIR=$(realpath -m "$1"); NAME=$2; shift 2
[ -f "$DIR/env" ] || { echo "image.sh: $DIR/env missing (run setup.sh first)" >&2; exit 1; }
# shellcheck disable=SC1091
. "$DIR/env"
safe=$(printf '%s' "$NAME" | tr -c 'A-Za-z0-9._-' '_')
out=$DIR/images/$safe.tar
if [[ ${1:-} == --archive ]]; then
  # An OCI archive built already (`wpod kube build --archive`): its line made from its index.
  [[ -f ${2:-} ]] || { echo "image.sh: --archive needs an OCI archive" >&2; exit 64; }
  cp "$2" "$out"
  /usr/bin/python3 - "$out" "$NAME" > "$out.json" <<'PY'
import json, sys, tarfile
index = json.load(tarfile.open(sys.argv[1]).extractfile("index.json"))
print(json.dumps({"name": sys.argv[2], "manifest_digest": index["manifests"][0]["digest"], "out": sys.argv[1]}))
PY
else
  /usr/bin/python3 "$HERE/mkimage.py" --out "$out" --name "$NAME" "$@" > "$out.json"
fi
ctr --address "$CRI_SOCKET" --namespace k8s.io images import "$out" > "$out.import.log" 2>&1 ||
  { echo "image.sh: ctr import failed: $(cat "$out.import.log")" >&2; exit 1; }
# A CRI pull records name:tag and name@digest; `ctr images import` only name:tag, and the CRI
# then lists the repo digest but cannot resolve it ("failed to resolve image ...: not found").
# Add the digest reference so specs can pin images by digest, as generated YAML does.
digest=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifest_digest"])' "$out.json")
repo=$NAME
last=${NAME##*/}
[[ $last == *:* ]] && repo=${NAME%:*}
ctr --address "$CRI_SOCKET" --namespace k8s.io images tag --force "$NAME" "$repo@$digest" >> "$out.import.log" 2>&1 ||
  { echo "image.sh: ctr images tag failed: $(cat "$out.import.log")" >&2; exit 1; }
for _ in $(seq 1 100); do
  s=$(/usr/bin/python3 "$HERE/cri.py" call ImageStatus "{\"image\":{\"image\":\"$NAME\"}}" 2>/dev/null) || true
  if [[ $s == *'"repo_tags": ["'* ]]; then
    s=$(/usr/bin/python3 "$HERE/cri.py" call ImageStatus "{\"image\":{\"image\":\"$repo@$digest\"}}" 2>/dev/null) || true
    if [[ $s == *'"repo_tags": ["'* ]]; then cat "$out.json"; exit 0; fi
  fi
  sleep 0.1
done
echo "image.sh: the CRI does not list $NAME (or $repo@$digest) after import" >&2
exit 1
