#!/usr/bin/env bash
# hostPorts against a direct connection to the pod's IP (as root):
#
#   bench/ports.sh [-r ROUNDS] [-d SECONDS] WPOD
#
# Runs in a network namespace of its own (re-executed under `unshare --net`, loopback up, no
# route out; wpod's CNI configuration in a temporary directory). One pod on wpod's default CNI
# network: its main container is Debian's nginx from the host filesystem (worker_processes 1,
# access log off, sendfile) on port 8080, serving a 1 KiB and a 1 MiB file, published as a
# hostPort (portmap's DNAT, in the kernel). A second, identical pod with
# `wpod.dev/network: none` is published by wpod's userspace forwarder (what every hostPort was
# before issue 24).
#   hostPort   wrk on the node against 127.0.0.1:PORT (DNAT to the pod, SNAT back: portmap)
#   direct     wrk on the node against POD_IP:8080
#   forwarder  wrk on the node against 127.0.0.1:PORT2 (the network-none pod)
# Cells: 1 and 10 connections (wrk -t min(c,2)) x keep-alive 1 KiB (req/s), a new connection per
# request (`Connection: close`, 1 KiB: conn/s) and keep-alive 1 MiB (MiB/s). ROUNDS rounds
# (default 3) of SECONDS (default 3) per cell and path; in each cell the paths run one after the
# other, the one that leads rotating from cell to cell and round to round.
# One JSON object per run on stdout (the hostPort path is the reference: bench/report.py gives
# hostPort/direct and hostPort/forwarder); progress on stderr.
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
install_peers nginx wrk nsenter curl python3
if [ -z "${WPOD_BENCH_ISOLATED:-}" ]; then
  export WPOD_BENCH_ISOLATED=1
  exec unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh bash "$0" -r "$rounds" -d "$duration" "$wpod"
fi

# wrk opens thousands of connections a second from one address, and nginx closes first (its
# side keeps TIME_WAIT): a port wrk reuses within 60 s meets that TIME_WAIT, and with Linux's
# random timestamp offset per connection (tcp_timestamps=1) the SYN looks old and waits a
# second for its retransmission. Timestamps without the random offset (2) let the pod accept
# it, as RFC 6191 intends; one client on this node namespace only (a real node has many).
sysctl -qw net.ipv4.tcp_timestamps=2
port=$((30000 + RANDOM % 10000))
port2=$((port + 1))
work=$(mktemp -d /tmp/wpod-ports.XXXXXX)
# Under bench/run.sh, the suite's one configuration (one bridge for all its scripts).
export WPOD_ROOT=$work/wpodroot WPOD_CNI_CONF_DIR=${WPOD_CNI_CONF_DIR:-$work/net.d}
pod=portbench pod2=portbench-none
cleanup() {
  set +e
  wpod_pods_cleanup "$wpod" "$pod" "$pod2"
  "$wpod" pod prune >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

b=$work/bench
mkdir -p "$b/site"
head -c 1024 /dev/urandom > "$b/site/1k"
head -c $((1 << 20)) /dev/urandom > "$b/site/1m"
for tag in cni none; do
cat > "$b/nginx-$tag.conf" <<EOF
worker_processes 1;
pid /tmp/wpod-ports-nginx-$tag.pid;
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
done
cat > "$work/pod.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $pod}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: nginx
    command: [nginx, -c, /bench/nginx-cni.conf, -g, "daemon off;"]
    ports: [{containerPort: 8080, hostPort: $port}]
    volumeMounts: [{name: bench, mountPath: /bench, readOnly: true}]
  volumes:
  - name: bench
    hostPath: {path: $b, type: Directory}
YAML
cat > "$work/pod2.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $pod2
  annotations: {wpod.dev/network: none}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: nginx
    command: [nginx, -c, /bench/nginx-none.conf, -g, "daemon off;"]
    ports: [{containerPort: 8080, hostPort: $port2, hostIP: 127.0.0.1}]
    volumeMounts: [{name: bench, mountPath: /bench, readOnly: true}]
  volumes:
  - name: bench
    hostPath: {path: $b, type: Directory}
YAML
"$wpod" run -d "$work/pod.yaml" >/dev/null
"$wpod" run -d "$work/pod2.yaml" >/dev/null
for ((i = 0; ; i++)); do
  ip=$("$wpod" ps --output json | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    if p["name"] == sys.argv[1] and p.get("ip"):
        print(p["ip"])' "$pod")
  [ -n "$ip" ] && curl -sf -o /dev/null "http://127.0.0.1:$port/1k" &&
    curl -sf -o /dev/null "http://127.0.0.1:$port2/1k" && break
  ((i < 100)) || { echo "nginx did not answer on the hostPorts" >&2; "$wpod" logs "$pod" >&2; exit 1; }
  sleep 0.2
done
curl -sf -o /dev/null "http://$ip:8080/1k"

cat > "$work/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "errors": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect + e.read + e.write + e.status + e.timeout))
end
EOF

say "ports: $rounds rounds x ${duration}s, hostPort $port (pod IP $ip), forwarded $port2, work $work"
python3 - "$work" "$rounds" "$duration" "$port" "$ip" "$port2" <<'PY'
import json, subprocess, sys
work, rounds, duration, port, ip, port2 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
CELLS = [("keep-alive 1 KiB", "1k", False, "req/s"), ("new connection 1 KiB", "1k", True, "conn/s"),
         ("keep-alive 1 MiB", "1m", False, "MiB/s")]
PATHS = {  # path: host, port, tool
    "hostPort": ("127.0.0.1", port, "wpod hostPort (kernel DNAT)"),
    "direct": (ip, "8080", "direct to the pod IP"),
    "forwarder": ("127.0.0.1", port2, "wpod forwarder (network none)"),
}

def wrk(path, body, close, conns):
    host, p, _ = PATHS[path]
    cmd = ["wrk", "-t", str(min(conns, 2)), "-c", str(conns), "-d", f"{duration}s", "--timeout", "10s",
                    "-s", f"{work}/report.lua"] + (["-H", "Connection: close"] if close else []) + [f"http://{host}:{p}/{body}"]
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
                                  "unit": unit, "run": rnd, "better": "higher", "ref": path == "hostPort",
                                  "errors": w["errors"], "requests": w["requests"]}), flush=True)
                print(f"  round {rnd}: {name} c={conns} {path}: {value:.1f} {unit} (errors {w['errors']})",
                      file=sys.stderr, flush=True)
PY
