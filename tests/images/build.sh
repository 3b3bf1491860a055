#!/usr/bin/env bash
# Builds wpod's test images offline, from what this Debian host has installed (busybox-static,
# nginx-light), packs them with umoci and pushes them with skopeo to a registry on loopback.
# Nothing is downloaded. Run as root (umoci keeps ownership).
#
#   tests/images/build.sh HOST:PORT
#
# Images (names as Pods write them; the registry is what registries.conf maps docker.io to):
#   library/busybox:latest      one layer: busybox and its applets, /etc/passwd; Cmd [sh]
#   library/nginx:latest        busybox's layer + a layer with Debian's nginx and its libraries;
#                               logs to stdout/stderr like the official image; StopSignal SIGQUIT
#   wpod-test/nginx-zstd:latest the same, layers compressed with zstd
#   wpod-test/entry:latest      Entrypoint [echo, from-entrypoint], Cmd [from-cmd]
#   wpod-test/stopsignal:latest StopSignal SIGUSR1
#   wpod-test/user:latest       User app (uid 1234, gid 1234 in its /etc/passwd)
#   wpod-test/whiteout:latest   a layer adding /data/{keep,gone,dir/x}, then one removing
#                               /data/gone (whiteout) and making /data/dir opaque with /data/dir/y
#   wpod-test/evil:latest       a layer with a `../` entry (must be refused)
#   wpod-test/multiarch:latest  an image index: linux/arm64 (the evil image, listed first) and
#                               linux/amd64 (busybox); an amd64 host must run busybox
set -euo pipefail
reg=${1:?usage: $0 HOST:PORT}
work=$(mktemp -d /tmp/wpod-test-images.XXXXXX)
trap 'rm -rf "$work"' EXIT
oci=$work/oci
umoci init --layout "$oci" >/dev/null

push() { # tag-in-layout destination [extra skopeo args]
  skopeo copy -q --dest-tls-verify=false "${@:3}" "oci:$oci:$1" "docker://$reg/$2" >/dev/null
}

# --- busybox -------------------------------------------------------------------------------
umoci new --image "$oci:busybox"
umoci unpack --image "$oci:busybox" "$work/bb" >/dev/null
root=$work/bb/rootfs
mkdir -p "$root"/{bin,etc,tmp,root,proc,sys,dev}
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
umoci repack --image "$oci:busybox" "$work/bb" >/dev/null
umoci config --image "$oci:busybox" --config.cmd=sh --config.env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
push busybox library/busybox:latest

# --- nginx: busybox's layer + one with nginx ------------------------------------------------
umoci unpack --image "$oci:busybox" "$work/ng" >/dev/null
root=$work/ng/rootfs
cp -L --parents /usr/sbin/nginx "$root"
for lib in $(ldd /usr/sbin/nginx | awk '$3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  cp -L --parents "$lib" "$root"
done
mkdir -p "$root"/etc/nginx "$root"/var/log/nginx "$root"/var/lib/nginx "$root"/run "$root"/usr/share/nginx/html
cp /etc/nginx/mime.types "$root/etc/nginx/"
cat > "$root/etc/nginx/nginx.conf" <<'CONF'
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log /dev/stderr;
events { worker_connections 64; }
http {
  include mime.types;
  access_log /var/log/nginx/access.log;
  server {
    listen 80;
    root /usr/share/nginx/html;
    location / { index index.html; }
  }
}
CONF
# As the official image: the logs are the container's stdout and stderr.
ln -sf /dev/stdout "$root/var/log/nginx/access.log"
ln -sf /dev/stderr "$root/var/log/nginx/error.log"
echo '<h1>Welcome to nginx!</h1>' > "$root/usr/share/nginx/html/index.html"
printf 'www-data:x:33:33:www-data:/var/www:/bin/false\n' >> "$root/etc/passwd"
printf 'www-data:x:33:\n' >> "$root/etc/group"
umoci repack --image "$oci:nginx" "$work/ng" >/dev/null
umoci config --image "$oci:nginx" --config.cmd=nginx --config.cmd=-g --config.cmd='daemon off;' \
  --config.stopsignal=SIGQUIT --config.exposedports=80/tcp
push nginx library/nginx:latest
# Another repository, so that skopeo compresses anew instead of reusing the gzip blobs.
push nginx wpod-test/nginx-zstd:latest --dest-compress-format zstd

# --- entrypoint and cmd -------------------------------------------------------------------
umoci unpack --image "$oci:busybox" "$work/en" >/dev/null
umoci repack --image "$oci:entry" "$work/en" >/dev/null
umoci config --image "$oci:entry" --config.entrypoint=echo --config.entrypoint=from-entrypoint \
  --config.cmd=from-cmd --config.env=FROM_IMAGE=image --config.env=SHARED=image \
  --config.workingdir=/tmp
push entry wpod-test/entry:latest

# --- a StopSignal ---------------------------------------------------------------------------
umoci unpack --image "$oci:busybox" "$work/ss" >/dev/null
umoci repack --image "$oci:stopsignal" "$work/ss" >/dev/null
umoci config --image "$oci:stopsignal" --config.stopsignal=SIGUSR1 --config.cmd=sh
push stopsignal wpod-test/stopsignal:latest

# --- a user -------------------------------------------------------------------------------
umoci unpack --image "$oci:busybox" "$work/us" >/dev/null
printf 'app:x:1234:1234:app:/home/app:/bin/sh\n' >> "$work/us/rootfs/etc/passwd"
printf 'app:x:1234:\n' >> "$work/us/rootfs/etc/group"
umoci repack --image "$oci:user" "$work/us" >/dev/null
umoci config --image "$oci:user" --config.user=app --config.cmd=id
push user wpod-test/user:latest

# --- whiteouts ------------------------------------------------------------------------------
umoci unpack --image "$oci:busybox" "$work/wo" >/dev/null
mkdir -p "$work/wo/rootfs/data/dir"
echo keep > "$work/wo/rootfs/data/keep"
echo gone > "$work/wo/rootfs/data/gone"
echo x > "$work/wo/rootfs/data/dir/x"
umoci repack --image "$oci:whiteout" "$work/wo" >/dev/null
rm -rf "$work/wo"
umoci unpack --image "$oci:whiteout" "$work/wo" >/dev/null
rm "$work/wo/rootfs/data/gone"
rm -rf "$work/wo/rootfs/data/dir"
mkdir "$work/wo/rootfs/data/dir"
echo y > "$work/wo/rootfs/data/dir/y"
umoci repack --image "$oci:whiteout" "$work/wo" >/dev/null
umoci config --image "$oci:whiteout" --config.cmd=sh
push whiteout wpod-test/whiteout:latest

# --- a layer that climbs out ----------------------------------------------------------------
python3 - "$work/evil.tar" <<'PY'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w") as t:
    data = b"pwned\n"
    info = tarfile.TarInfo("../../../../tmp/wpod-evil-layer-escaped")
    info.size = len(data)
    t.addfile(info, io.BytesIO(data))
PY
umoci new --image "$oci:evil"
umoci raw add-layer --image "$oci:evil" "$work/evil.tar"
umoci config --image "$oci:evil" --config.cmd=sh
push evil wpod-test/evil:latest

# --- a multi-platform index ---------------------------------------------------------------
push busybox wpod-test/multiarch:amd64
push evil wpod-test/multiarch:arm64
python3 - "$reg" <<'PY'
import json, sys, urllib.request
reg = sys.argv[1]
accept = "application/vnd.oci.image.manifest.v1+json"
def describe(tag, arch):
    req = urllib.request.Request(f"http://{reg}/v2/wpod-test/multiarch/manifests/{tag}", headers={"Accept": accept})
    with urllib.request.urlopen(req) as r:
        body = r.read()
        return {"mediaType": r.headers["Content-Type"], "digest": r.headers["Docker-Content-Digest"],
                "size": len(body), "platform": {"architecture": arch, "os": "linux"}}
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [describe("arm64", "arm64"), describe("amd64", "amd64")]}
req = urllib.request.Request(f"http://{reg}/v2/wpod-test/multiarch/manifests/latest", method="PUT",
                             data=json.dumps(index).encode(),
                             headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
urllib.request.urlopen(req).read()
PY
