#!/usr/bin/env bash
# TLS termination: the tls-proxy Wasm sidecar against nginx and haproxy, side by side (as root):
#
#   bench/tls.sh [-r ROUNDS] [-d SECONDS] [-p] [-o FILE] [-j|--json] WPOD
#
# One pod (private $WPOD_ROOT): its main container is an nginx backend on 127.0.0.1:8080 (plain
# HTTP, one worker) serving a 1 KiB and a 1 MiB file; in front of it, on the pod's loopback, three
# TLS-terminating reverse proxies with the same certificate (ECDSA P-256, self-signed, made here
# with openssl), TLS 1.3 only and the same cipher-suite order, the server's (AES-128-GCM first):
#
#   tls-proxy   :8443  the Wasm sidecar (target/sidecars/tls-proxy.wasm), TLS run by the host
#                      through wpod:sidecar/tls, plaintext relayed by host transfers
#                      (wpod:sidecar/relay)
#   tls-proxy-wasm :8446  the same sidecar with TLS_ENGINE=guest: rustls (pure-Rust crypto)
#                      inside Wasm, one request per connection: how it ran before
#   nginx       :8444  a native container: nginx, worker_processes 1, proxy_pass with keep-alive
#                      to the backend (upstream keepalive, HTTP/1.1), ssl_session_cache
#   haproxy     :8445  a native container: haproxy, nbthread 1, mode http, ssl on bind
#
# wrk runs inside the pod's network namespace (nsenter), so no hostPort forwarder is measured.
# Matrix: 1, 10 and 100 connections (threads = min(conns, 2)) x keep-alive / a new connection
# per request (`Connection: close`) x 1 KiB / 1 MiB bodies; each cell runs every proxy once per
# round, ROUNDS rounds (default 3) of SECONDS each (default 5), the proxies' order rotating.
# Per cell: medians and ranges of req/s, MiB/s, time per request (conns x duration / requests,
# which counts the handshake and accept queueing that wrk's latency leaves out), wrk's p50/p99,
# errors, and the proxy's CPU per request (utime+stime from /proc/PID/stat over the run: nginx's
# master and worker, haproxy's process, and for tls-proxy the pod's `wpod run` supervisor, which
# hosts wasmtime, all its threads); ratios tls-proxy/nginx and tls-proxy/haproxy. JSON goes to
# FILE (default /tmp/wpod-tlsbench-TIME.json), a markdown table to stdout (bench/tls.py).
# -p: `perf record -g` on the supervisor during three runs of tls-proxy (1 KiB and 1 MiB
# keep-alive with 100 connections, 1 KiB with a new connection per request and 10), and the top
# of `perf report --no-children --sort symbol` (and `--sort dso`) for each.
# -j (--json): for bench/run.sh, one JSON object per run on stdout (tool, measure, value, unit,
# run: req/s for 1 KiB cells, MiB/s for 1 MiB ones), and the markdown above on stderr instead.
set -euo pipefail
rounds=3 duration=5 perf=0 out= json=0
args=()
for a in "$@"; do [ "$a" = --json ] && args+=(-j) || args+=("$a"); done
set -- ${args[@]+"${args[@]}"}
while getopts "r:d:po:j" opt; do
  case $opt in r) rounds=$OPTARG ;; d) duration=$OPTARG ;; p) perf=1 ;; o) out=$OPTARG ;; j) json=1 ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
usage="usage: $0 [-r ROUNDS] [-d SECONDS] [-p] [-o FILE] [-j|--json] WPOD"
(($# == 1)) || { echo "$usage" >&2; exit 2; }
wpod=$(realpath "$1")
[[ $rounds =~ ^[1-9][0-9]*$ && $duration =~ ^[1-9][0-9]*$ ]] || { echo "$usage (ROUNDS and SECONDS: whole numbers)" >&2; exit 2; }
((EUID == 0)) || { echo "$0: needs root (pods, nsenter, perf)" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
wasm=$root/target/sidecars/tls-proxy.wasm
[ -x "$wpod" ] || { echo "$wpod: not an executable" >&2; exit 2; }
[ -f "$wasm" ] || { echo "$wasm is missing: build the guests first (cargo build -p wpod-test-support)" >&2; exit 2; }
out=${out:-/tmp/wpod-tlsbench-$(date +%Y%m%d-%H%M%S).json}

# The peers, from Debian; policy-rc.d keeps the packages from starting their services.
missing=()
for p in wrk haproxy nginx openssl curl; do command -v "$p" >/dev/null || missing+=("$p"); done
if ((${#missing[@]})); then
  pkgs=()
  for p in "${missing[@]}"; do case $p in nginx) pkgs+=(nginx-light) ;; *) pkgs+=("$p") ;; esac; done
  guard=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && guard=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  [ -z "$guard" ] || rm -f /usr/sbin/policy-rc.d
fi
((perf == 0)) || command -v perf >/dev/null || { echo "-p needs perf" >&2; exit 2; }

work=$(mktemp -d /tmp/wpod-tlsbench.XXXXXX)
export WPOD_ROOT=$work/wpodroot
pod=tlsbench
cleanup() {
  "$wpod" stop -t 1 "$pod" >/dev/null 2>&1 || true
  "$wpod" rm "$pod" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Everything the containers read is in one hostPath volume at /bench (a native container's /tmp
# is its own tmpfs).
b=$work/bench
mkdir -p "$b/tls" "$b/site" "$b/conf"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$b/tls/tls.key" -out "$b/tls/tls.crt" 2>/dev/null
cat "$b/tls/tls.crt" "$b/tls/tls.key" > "$b/tls/haproxy.pem"
head -c 1024 /dev/urandom > "$b/site/1k"
head -c $((1 << 20)) /dev/urandom > "$b/site/1m"
# The server's order, which each proxy follows rather than the client's (wrk, as OpenSSL, offers
# AES-256 first): wpod's host TLS puts AES-128-GCM first on a CPU with AES instructions (ChaCha20
# without), and nginx and haproxy are given the same order and told to prefer it, so all three
# should agree. (The guest's own rustls, tls-proxy-wasm, follows the client.) The script checks
# what each negotiates (s_client) and records it.
suites=TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256

cat > "$b/conf/backend.conf" <<'EOF'
worker_processes 1;
pid /tmp/backend.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:8080 backlog=4096;
    root /bench/site;
  }
}
EOF
cat > "$b/conf/nginx-tls.conf" <<EOF
worker_processes 1;
pid /tmp/nginx-tls.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend {
    server 127.0.0.1:8080;
    keepalive 128;
    keepalive_requests 1000000;
  }
  ssl_protocols TLSv1.3;
  ssl_conf_command Ciphersuites $suites;
  ssl_prefer_server_ciphers on;
  ssl_session_cache shared:SSL:10m;
  ssl_session_timeout 1h;
  keepalive_requests 1000000;
  server {
    listen 8444 ssl backlog=4096;
    ssl_certificate /bench/tls/tls.crt;
    ssl_certificate_key /bench/tls/tls.key;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
cat > "$b/conf/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-bind-ciphersuites $suites
  # (haproxy prefers the server's order unless a bind says prefer-client-ciphers.)
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
frontend tls
  bind :8445 ssl crt /bench/tls/haproxy.pem
  default_backend backend
backend backend
  server backend 127.0.0.1:8080
EOF
mount_bench="volumeMounts: [{name: bench, mountPath: /bench, readOnly: true}]"
# The Wasm sidecar, as container NAME on PORT with one more env entry (its engine's setting).
tls_proxy() {
  cat <<YAML
  - name: $1
    image: $wasm
    env:
    - {name: LISTEN, value: "0.0.0.0:$2"}
    - {name: BACKEND, value: "127.0.0.1:8080"}
    - {name: CERT, value: /bench/tls/tls.crt}
    - {name: KEY, value: /bench/tls/tls.key}
    - $3
    ports: [{containerPort: $2}]
    $mount_bench
YAML
}
cat > "$work/pod.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $pod
  # tls-proxy holds about 10 handles per connection (sockets, streams, pollables): 100
  # connections take about 1,000; two sidecars of 4,096 fit under a hard limit of 20,000 files.
  annotations: {wpod.dev/sidecar-max-handles: "4096"}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: backend
    command: [nginx, -c, /bench/conf/backend.conf, -g, "daemon off;"]
    ports: [{containerPort: 8080}]
    $mount_bench
$(tls_proxy tls-proxy 8443 "{name: MAX_CONNECTIONS, value: \"1000\"}")
$(tls_proxy tls-proxy-wasm 8446 "{name: TLS_ENGINE, value: guest}")
  - name: nginx
    command: [nginx, -c, /bench/conf/nginx-tls.conf, -g, "daemon off;"]
    ports: [{containerPort: 8444}]
    $mount_bench
  - name: haproxy
    command: [haproxy, -db, -f, /bench/conf/haproxy.cfg]
    ports: [{containerPort: 8445}]
    $mount_bench
  volumes:
  - name: bench
    hostPath: {path: $b, type: Directory}
YAML

"$wpod" run -d "$work/pod.yaml" >/dev/null
# The host PIDs: the supervisor (`wpod run`, which hosts wasmtime) and the native containers'
# first processes, once all of them have started.
for ((i = 0; ; i++)); do
  pids=$("$wpod" describe "$pod" --output json | python3 -c '
import json, sys
d = json.load(sys.stdin)
by = {c["name"]: c["pid"] for c in d["pod"]["containers"] if c["state"] == "running"}
print(d["plan"]["pid"], *(by.get(n) or "" for n in ("backend", "nginx", "haproxy")))')
  read -r sup backend_pid nginx_pid haproxy_pid <<<"$pids"
  [ -n "${haproxy_pid:-}" ] && break
  ((i < 100)) || { echo "the pod's containers did not all start: $("$wpod" ps)" >&2; exit 1; }
  sleep 0.2
done
# Every port answers (from inside the pod) before anything is measured.
for port in 8080 8443 8444 8445 8446; do
  scheme=https; ((port == 8080)) && scheme=http
  for ((i = 0; ; i++)); do
    nsenter -t "$backend_pid" -n curl -skf -o /dev/null "$scheme://127.0.0.1:$port/1k" && break
    ((i < 100)) || { echo "port $port does not answer; the pod's logs:" >&2; for c in backend tls-proxy tls-proxy-wasm nginx haproxy; do "$wpod" logs -c "$c" "$pod" 2>&1 | tail -5 | sed "s/^/[$c] /" >&2; done; exit 1; }
    sleep 0.2
  done
done

cat > "$work/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, "lat_mean_us": %.1f, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(99), latency.max))
end
EOF

python3 "$root/bench/tls.py" "$(python3 -c '
import json, sys
k = ["wpod", "pod", "work", "out", "rounds", "duration", "perf", "sup", "backend", "nginx", "haproxy", "json"]
print(json.dumps(dict(zip(k, sys.argv[1:]))))' \
  "$wpod" "$pod" "$work" "$out" "$rounds" "$duration" "$perf" "$sup" "$backend_pid" "$nginx_pid" "$haproxy_pid" "$json")"
