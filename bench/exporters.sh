#!/usr/bin/env bash
# The exporter sidecars against the exporters Prometheus users run today (as root):
#
#   bench/exporters.sh [-r ROUNDS] [-n SCRAPES] [-w WARMUP] WPOD
#
#   wpod redis-exporter   guests/redis-exporter in a pod with redis-server (the main container)
#   redis_exporter        Debian's prometheus-redis-exporter (oliver006, v1.45), against the same
#                         Redis: run in the pod's network namespace (nsenter), REDIS_ADDR the
#                         pod's 127.0.0.1
#   wpod proc-monitor     guests/proc-monitor in a pod with redis-server (shareProcessNamespace)
#   process-exporter      Debian's prometheus-process-exporter (ncabatoff, v0.7.10), one group
#                         matching that same redis-server by its command line
#
# Each pair is scraped alternately (one of each per iteration, a new connection each, as a
# Prometheus scrape after its keep-alive lapsed), from inside the pod's network namespace so
# that both go the same way; WARMUP iterations first, then SCRAPES measured ones. Before, Redis
# gets a little traffic (redis-benchmark, 16 commands, 3 databases), so per-command and
# per-database families have samples. ROUNDS rounds (default 3), each with a new pod and a new
# peer process for each pair, the redis pair then the process pair.
#
# rss_kib: a peer's own VmRSS after the scrapes. A sidecar has no process of its own (it runs in
# the pod's wpod process): its figure is the wpod process's VmRSS after the scrapes minus that
# of the same pod without it, as BENCHMARKS.md's density figure counts a sidecar. Both pods also
# hold an idle `probe` sidecar, so the difference is the exporter's alone; what the Wasm runtime
# itself costs a pod, once for all its sidecars, is runtime_rss_kib (the pod with the idle
# probe minus the pod with no sidecar). Every component is compiled into wpod's cache by a first
# start of each pod before anything is measured, as `wpod pull` or an earlier run leaves it.
#
# families: `# TYPE` lines of one scrape; families_target leaves out a peer's metrics of its own
# Go process (go_*, process_*, promhttp_*). scrape_hostport_p50_ms: a sidecar scraped through its
# hostPort from the host, as a Prometheus on the host does.
#
# Prints one JSON line per tool and round on stdout (run: the round; its scrape percentiles, RSS
# and families; bench/report.py adapts them to the suite's rows) and a table on stderr.
# Sidecars: $SIDECARS, else the newer build of guests/target/wasm32-wasip2/release and
# target/sidecars; the idle one: $PROBE, else target/sidecars/probe.wasm.
set -euo pipefail
rounds=3
scrapes=200
warmup=20
while getopts "r:n:w:" opt; do
  case $opt in r) rounds=$OPTARG ;; n) scrapes=$OPTARG ;; w) warmup=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
wpod=$(realpath "${1:?usage: $0 [-r ROUNDS] [-n SCRAPES] [-w WARMUP] WPOD}")
root=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "run as root (pods, nsenter)" >&2; exit 2; }
# The suite's helper installs missing peers (Debian packages) when it is there.
if [ -f "$root/bench/lib.sh" ]; then
  source "$root/bench/lib.sh"
  install_peers redis-server prometheus-redis-exporter prometheus-process-exporter nsenter python3 curl
fi
for tool in redis-server redis-cli redis-benchmark prometheus-redis-exporter prometheus-process-exporter nsenter python3 curl; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (apt install redis-server prometheus-redis-exporter prometheus-process-exporter)" >&2; exit 2; }
done
if [ -z "${SIDECARS:-}" ]; then
  guest=$root/guests/target/wasm32-wasip2/release
  SIDECARS=$root/target/sidecars
  [ "$guest/redis-exporter.wasm" -nt "$SIDECARS/redis-exporter.wasm" ] && SIDECARS=$guest
fi
for w in redis-exporter proc-monitor; do
  [ -f "$SIDECARS/$w.wasm" ] || { echo "no $SIDECARS/$w.wasm: build the guests (cd guests && cargo build --release --target wasm32-wasip2 -p $w)" >&2; exit 2; }
done
PROBE=${PROBE:-$root/target/sidecars/probe.wasm}
[ -f "$PROBE" ] || { echo "no $PROBE: build the guests (cargo build -p wpod-test-support builds target/sidecars)" >&2; exit 2; }

work=$(mktemp -d /tmp/wpod-exporterbench.XXXXXX)
export WPOD_ROOT=$work/wpodroot
pods=()      # names of pods started
pids=()      # wpod run and peer processes started
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pods[@]}"; do "$wpod" stop -t 1 "$p" >/dev/null 2>&1; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  for p in "${pods[@]}"; do "$wpod" rm "$p" >/dev/null 2>&1; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=6391 # Redis's port inside each pod (its own network namespace)

pod() { # $1: name, $2: sidecar (none, idle, redis-exporter, proc-monitor), $3: host port
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  shareProcessNamespace: $([ "$2" = proc-monitor ] && echo true || echo false)
  terminationGracePeriodSeconds: 2
  containers:
  - name: redis
    command: [redis-server, --bind, 127.0.0.1, --port, "$PORT", --save, "", --appendonly, "no", --protected-mode, "no"]
YAML
  [ "$2" = none ] && return
  cat <<YAML
  - name: idle
    image: $PROBE
    args: [ready, wait-stopping]
YAML
  [ "$2" = idle ] && return
  cat <<YAML
  - name: exporter
    image: $SIDECARS/$2.wasm
    env: [{name: LISTEN, value: "0.0.0.0:9400"}, {name: REDIS_ADDR, value: "127.0.0.1:$PORT"}]
    ports: [{containerPort: 9400, hostPort: $3, hostIP: 127.0.0.1}]
    resources: {limits: {memory: 32Mi}}
YAML
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# Starts pod $1 (sidecar $2, host port $3); sets run_pid and redis_pid.
start() {
  local name=$1
  pod "$name" "$2" "$3" > "$work/$name.yaml"
  "$wpod" run "$work/$name.yaml" > "$work/$name.log" 2>&1 &
  run_pid=$!
  pids+=("$run_pid")
  pods+=("$name")
  redis_pid=
  for _ in $(seq 200); do
    redis_pid=$("$wpod" describe --output json "$name" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(next((c["pid"] for c in d["pod"]["containers"] if c["name"] == "redis" and c["pid"]), ""))' 2>/dev/null || true)
    if [ -n "$redis_pid" ] && nsenter -t "$redis_pid" -n redis-cli -p $PORT ping >/dev/null 2>&1; then
      if [ "$2" = none ] || [ "$2" = idle ] || curl -sf -o /dev/null "http://127.0.0.1:$3/metrics"; then return 0; fi
    fi
    kill -0 "$run_pid" 2>/dev/null || { cat "$work/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "pod $name did not come up" >&2; cat "$work/$name.log" >&2; exit 1
}

stop() { # $1: pod name
  "$wpod" stop -t 1 "$1" >/dev/null 2>&1 || true
  wait "$run_pid" 2>/dev/null || true
  "$wpod" rm "$1" >/dev/null 2>&1 || true
}

traffic() { # some keys in db0, db1, db3 and a spread of commands
  local n="nsenter -t $redis_pid -n"
  $n redis-benchmark -p $PORT -q -n 2000 -r 1000 -t set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange,mset >/dev/null
  $n redis-cli -p $PORT -n 1 set k v >/dev/null
  $n redis-cli -p $PORT -n 3 setex t 1000 v >/dev/null
}

cat > "$work/scrape.py" <<'PY'
# scrape.py N WARMUP NAME=URL...: alternate scrapes, one JSON object per target.
import http.client, json, sys, time, urllib.parse
n, warmup = int(sys.argv[1]), int(sys.argv[2])
targets = [a.split("=", 1) for a in sys.argv[3:]]
times = {name: [] for name, _ in targets}
last = {}
def scrape(url):
    u = urllib.parse.urlsplit(url)
    t0 = time.perf_counter()
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("GET", u.path)
    r = c.getresponse()
    body = r.read()
    c.close()
    if r.status != 200:
        raise SystemExit(f"{url}: HTTP {r.status}")
    return time.perf_counter() - t0, body
for i in range(warmup + n):
    for name, url in targets:
        t, body = scrape(url)
        if i >= warmup:
            times[name].append(t * 1000)
        last[name] = body
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
for name, _ in targets:
    text = last[name].decode()
    types = [l.split()[2] for l in text.splitlines() if l.startswith("# TYPE ")]
    own = ("go_", "process_", "promhttp_")
    print(json.dumps({
        "tool": name,
        "families": len(types),
        "families_target": len([t for t in types if not (name in ("redis_exporter", "process-exporter") and t.startswith(own))]),
        "scrape_p50_ms": round(pct(times[name], 50), 3),
        "scrape_p99_ms": round(pct(times[name], 99), 3),
        "bytes": len(last[name]),
    }))
PY

results=$work/results.jsonl
: > "$results"
settle() { sleep 1; }

# Every component compiled into the cache first.
start exbench-warm-redis redis-exporter 19491; stop exbench-warm-redis
start exbench-warm-proc proc-monitor 19492; stop exbench-warm-proc

# The pod alone, then with an idle sidecar: the wpod process's memory.
start exbench-none none 0
traffic
settle
none_rss=$(rss_kib "$run_pid")
stop exbench-none
start exbench-idle idle 0
traffic
settle
base_rss=$(rss_kib "$run_pid")
stop exbench-idle
runtime_rss=$((base_rss - none_rss))

# process-exporter's configuration: one group, the pod's redis-server by its command line.
cat > "$work/process-exporter.yaml" <<YAML
process_names:
  - name: "{{.Comm}}"
    cmdline: ['127\\.0\\.0\\.1:$PORT']
YAML

# compare POD SIDECAR HOSTPORT PEER PEERPORT ROUND PEER_ARGV...: one round of a sidecar against
# its peer (run in the pod's network namespace, listening on 127.0.0.1:PEERPORT); its two rows
# go to stdout and $results.
compare() {
  local name=$1 sidecar=$2 hostport=$3 peername=$4 peerport=$5 rnd=$6
  shift 6
  start "$name" "$sidecar" "$hostport"
  traffic
  nsenter -t "$redis_pid" -n "$@" > "$work/$peername.log" 2>&1 &
  peer=$!
  pids+=("$peer")
  for _ in $(seq 100); do nsenter -t "$redis_pid" -n curl -sf -o /dev/null "http://127.0.0.1:$peerport/metrics" && break; sleep 0.1; done
  nsenter -t "$redis_pid" -n python3 "$work/scrape.py" "$scrapes" "$warmup" \
    "wpod $sidecar=http://127.0.0.1:9400/metrics" "$peername=http://127.0.0.1:$peerport/metrics" > "$work/pair.jsonl"
  settle
  sidecar_rss=$(( $(rss_kib "$run_pid") - base_rss ))
  peer_rss=$(rss_kib "$peer")
  via_host=$(python3 "$work/scrape.py" "$scrapes" "$warmup" "wpod $sidecar=http://127.0.0.1:$hostport/metrics")
  kill "$peer"; wait "$peer" 2>/dev/null || true
  stop "$name"
  python3 - "$work/pair.jsonl" "$via_host" "$sidecar_rss" "$peer_rss" "$runtime_rss" "$rnd" <<'PY' | tee -a "$results"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
host = json.loads(sys.argv[2])
for r in rows:
    r["run"] = int(sys.argv[6])
    if r["tool"].startswith("wpod"):
        r["rss_kib"] = int(sys.argv[3]); r["runtime_rss_kib"] = int(sys.argv[5])
        r["scrape_hostport_p50_ms"] = host["scrape_p50_ms"]
    else:
        r["rss_kib"] = int(sys.argv[4])
    print(json.dumps(r), flush=True)
PY
}

for ((rnd = 0; rnd < rounds; rnd++)); do
  echo "exporters: round $rnd" >&2
  compare exbench-redis redis-exporter 19491 redis_exporter 9121 "$rnd" \
    prometheus-redis-exporter -redis.addr "redis://127.0.0.1:$PORT" -web.listen-address 127.0.0.1:9121
  compare exbench-proc proc-monitor 19492 process-exporter 9256 "$rnd" \
    prometheus-process-exporter -config.path "$work/process-exporter.yaml" -web.listen-address 127.0.0.1:9256
done

python3 - "$results" "$scrapes" >&2 <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\n{sys.argv[2]} scrapes each per round, alternating, from the pod's network namespace")
print(f"{'round':<6}{'tool':<22}{'families':>9}{'(target)':>9}{'p50 ms':>9}{'p99 ms':>9}{'RSS KiB':>9}{'bytes':>8}{'  via hostPort p50':>19}")
rt = next((r["runtime_rss_kib"] for r in rows if "runtime_rss_kib" in r), None)
for r in rows:
    hp = r.get("scrape_hostport_p50_ms")
    print(f"{r['run']:<6}{r['tool']:<22}{r['families']:>9}{r['families_target']:>9}{r['scrape_p50_ms']:>9.3f}{r['scrape_p99_ms']:>9.3f}{r['rss_kib']:>9}{r['bytes']:>8}{(f'{hp:.3f}' if hp is not None else '-'):>19}")
print(f"sidecar RSS: the pod's wpod process with it minus without; the Wasm runtime itself: {rt} KiB per pod, once for all its sidecars")
PY
