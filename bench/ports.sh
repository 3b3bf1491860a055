#!/usr/bin/env bash
# hostPort forwarding against direct access: wrk through wpod's hostPort forwarder against wrk
# inside the pod's network namespace, on the same nginx, with haproxy as a reference hop (as root):
#
#   bench/ports.sh [-r ROUNDS] [-d SECONDS] WPOD
#
# One pod (private $WPOD_ROOT): its main container is Debian's nginx from the host filesystem
# (worker_processes 1, access log off, sendfile) on port 8080, serving a 1 KiB and a 1 MiB file,
# published as hostPort 127.0.0.1:PORT (wpod's forwarder: the host listens, and relays each
# connection to the pod's loopback through a socket made inside the pod's network namespace).
#   forwarded  wrk on the host against 127.0.0.1:PORT
#   direct     `nsenter --net=/proc/PID/ns/net wrk` against 127.0.0.1:8080 (PID: the main
#              container's, from `wpod ps`)
#   haproxy    Debian's haproxy, started with `nsenter --net=/proc/PID/ns/net haproxy -f CFG`
#              (nbthread 1, mode tcp, defaults otherwise: no splicing), its frontend on
#              127.0.0.1:8090 in the pod's network namespace, its backend 127.0.0.1:8080 (the same
#              nginx); wrk in the pod's network namespace against 127.0.0.1:8090. What one
#              userspace TCP hop costs with a mature proxy on this machine, to read the
#              forwarder's ratio to direct against.
# Cells: 1 and 10 connections (wrk -t min(c,2)) x keep-alive 1 KiB (req/s), a new connection per
# request (`Connection: close`, 1 KiB: conn/s) and keep-alive 1 MiB (MiB/s). ROUNDS rounds
# (default 3) of SECONDS (default 3) per cell and path; in each cell the three paths run one
# after the other, the one that leads rotating from cell to cell and round to round.
# One JSON object per run on stdout (the forwarded path is the reference: bench/report.py gives
# forwarded/direct and forwarded/haproxy); progress on stderr.
set -euo pipefail
rounds=3 duration=3
while getopts "r:d:" opt; do
  case $opt in r) rounds=$OPTARG ;; d) duration=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
(($# == 1)) || { echo "usage: $0 [-r ROUNDS] [-d SECONDS] WPOD" >&2; exit 2; }
((EUID == 0)) || { echo "$0: needs root" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/bench/lib.sh"
wpod=$(realpath "$1")
install_peers nginx haproxy wrk nsenter curl python3

port=$((30000 + RANDOM % 10000))
work=$(mktemp -d /tmp/wpod-ports.XXXXXX)
export WPOD_ROOT=$work/wpodroot
pod=portbench
cleanup() {
  set +e
  [ -s "$work/haproxy.pid" ] && kill "$(cat "$work/haproxy.pid")" 2>/dev/null
  wpod_pods_cleanup "$wpod" "$pod"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

b=$work/bench
mkdir -p "$b/site"
head -c 1024 /dev/urandom > "$b/site/1k"
head -c $((1 << 20)) /dev/urandom > "$b/site/1m"
cat > "$b/nginx.conf" <<'EOF'
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  server {
    listen 8080 backlog=4096;
    root /bench/site;
  }
}
EOF
cat > "$work/pod.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $pod}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: nginx
    command: [nginx, -c, /bench/nginx.conf, -g, "daemon off;"]
    ports: [{containerPort: 8080, hostPort: $port, hostIP: 127.0.0.1}]
    volumeMounts: [{name: bench, mountPath: /bench, readOnly: true}]
  volumes:
  - name: bench
    hostPath: {path: $b, type: Directory}
YAML
"$wpod" run -d "$work/pod.yaml" >/dev/null
for ((i = 0; ; i++)); do
  pid=$("$wpod" ps --output json | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    for c in p["containers"]:
        if p["name"] == sys.argv[1] and c["state"] == "running" and c["pid"]:
            print(c["pid"])' "$pod")
  [ -n "$pid" ] && curl -sf -o /dev/null "http://127.0.0.1:$port/1k" && break
  ((i < 100)) || { echo "nginx did not answer on the hostPort" >&2; "$wpod" logs "$pod" >&2; exit 1; }
  sleep 0.2
done
nsenter --net="/proc/$pid/ns/net" curl -sf -o /dev/null http://127.0.0.1:8080/1k

# The reference hop: haproxy in the pod's network namespace (the host's filesystem), daemonized,
# its pid in $work/haproxy.pid (killed by the cleanup).
cat > "$work/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 4096
  daemon
  pidfile $work/haproxy.pid
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend pod
  bind 127.0.0.1:8090
  default_backend nginx
backend nginx
  server nginx 127.0.0.1:8080
CFG
nsenter --net="/proc/$pid/ns/net" haproxy -f "$work/haproxy.cfg"
for ((i = 0; ; i++)); do
  nsenter --net="/proc/$pid/ns/net" curl -sf -o /dev/null http://127.0.0.1:8090/1k && break
  ((i < 50)) || { echo "haproxy did not answer on 127.0.0.1:8090 in the pod" >&2; exit 1; }
  sleep 0.1
done

cat > "$work/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "errors": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect + e.read + e.write + e.status + e.timeout))
end
EOF

say "ports: $rounds rounds x ${duration}s, hostPort $port, nginx pid $pid, haproxy pid $(cat "$work/haproxy.pid"), work $work"
python3 - "$work" "$rounds" "$duration" "$port" "$pid" <<'PY'
import json, subprocess, sys
work, rounds, duration, port, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
CELLS = [("keep-alive 1 KiB", "1k", False, "req/s"), ("new connection 1 KiB", "1k", True, "conn/s"),
         ("keep-alive 1 MiB", "1m", False, "MiB/s")]
netns = ["nsenter", f"--net=/proc/{pid}/ns/net"]
PATHS = {  # path: wrk's argv prefix, port, tool
    "forwarded": ([], port, "wpod hostPort (forwarded)"),
    "direct": (netns, "8080", "direct (pod's netns)"),
    "haproxy": (netns, "8090", "haproxy (in the pod)"),
}

def wrk(path, body, close, conns):
    prefix, p, _ = PATHS[path]
    cmd = prefix + ["wrk", "-t", str(min(conns, 2)), "-c", str(conns), "-d", f"{duration}s", "--timeout", "10s",
                    "-s", f"{work}/report.lua"] + (["-H", "Connection: close"] if close else []) + [f"http://127.0.0.1:{p}/{body}"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    line = next(l for l in r.stdout.splitlines() if l.startswith("WRKJSON "))
    return json.loads(line[8:])

for rnd in range(rounds):
    for ci, (name, body, close, unit) in enumerate(CELLS):
        for k, conns in enumerate((1, 10)):
            lead = (rnd + 2 * ci + k) % len(PATHS)  # the path that runs first, rotating
            order = list(PATHS)[lead:] + list(PATHS)[:lead]
            for path in order:
                w = wrk(path, body, close, conns)
                secs = w["duration_us"] / 1e6
                value = w["bytes"] / secs / (1 << 20) if unit == "MiB/s" else w["requests"] / secs
                print(json.dumps({"tool": PATHS[path][2], "measure": f"ports: {name}, {conns} conn", "value": round(value, 2),
                                  "unit": unit, "run": rnd, "better": "higher", "ref": path == "forwarded",
                                  "errors": w["errors"], "requests": w["requests"]}), flush=True)
                print(f"  round {rnd}: {name} c={conns} {path}: {value:.1f} {unit} (errors {w['errors']})",
                      file=sys.stderr, flush=True)
PY
