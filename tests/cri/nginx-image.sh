#!/bin/bash
# Build and import an offline nginx image from the host's Debian nginx (binary + the shared
# libraries ldd names + busybox for probes), listening on 8080 as any uid, with a read-only
# root: it writes only under /tmp, so mount a writable host dir there.
#
#   tests/cri/nginx-image.sh DIR [NAME]      (NAME defaults to localhost/crit/nginx:offline)
#
# Needs /usr/sbin/nginx (Debian nginx or nginx-light; or NGINX=path to an extracted one).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 1 ] || { echo "usage: nginx-image.sh DIR [NAME]" >&2; exit 64; }
DIR=$(realpath -m "$1"); NAME=${2:-localhost/crit/nginx:offline}
NGINX=${NGINX:-/usr/sbin/nginx}
[ -x "$NGINX" ] || { echo "nginx-image.sh: no $NGINX (apt-get install nginx-light)" >&2; exit 1; }
W=$DIR/build/nginx
mkdir -p "$W"
cat > "$W/nginx.conf" <<'EOF'
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr notice;
events { worker_connections 64; }
http {
  access_log /dev/stdout;
  client_body_temp_path /tmp/client_body;
  proxy_temp_path /tmp/proxy;
  fastcgi_temp_path /tmp/fastcgi;
  uwsgi_temp_path /tmp/uwsgi;
  scgi_temp_path /tmp/scgi;
  server { listen 8080; location / { return 200 "nginx-ok\n"; } }
}
EOF
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$W/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$W/group"
args=(
  --add "$NGINX:/usr/sbin/nginx:0755" --add "$W/nginx.conf:/etc/nginx/nginx.conf:0644"
  --add "$W/passwd:/etc/passwd:0644" --add "$W/group:/etc/group:0644"
  --add /bin/busybox:/bin/busybox:0755 --symlink /bin/sh:busybox --symlink /usr/bin/wget:/bin/busybox
  --dir /tmp:1777 --dir /var/log/nginx
  # -e: the error log before the config is read (else it tries /var/log/nginx/error.log).
  --entrypoint '["/usr/sbin/nginx","-e","stderr","-g","daemon off;"]'
  --stop-signal SIGQUIT
)
for lib in $(ldd "$NGINX" | grep -oE '/[^ ]+\.so[^ ]*'); do
  args+=(--add "$(readlink -f "$lib"):$lib:0755")
done
exec "$HERE/image.sh" "$DIR" "$NAME" "${args[@]}"
