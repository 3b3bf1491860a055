#!/usr/bin/env bash
# Log shipping throughput: a file backlog shipped to a TCP receiver (as root).
#
#   bench/logship.sh [-r RUNS] [-m MIB] [-w WPOD] [-s NAME=SHIPPER.wasm]... [-t TOOLS] [-a MS]
#
# Writes a MIB MiB file of 100-byte numbered lines, then RUNS times, interleaved, ships it to a
# receiver on 127.0.0.1 that counts bytes and lines and checks them against the file:
#   tail-socat  `tail -n +1 -F FILE | socat -u - TCP:127.0.0.1:PORT`
#   rsyslog     rsyslogd -n with imfile -> omfwd (TCP, template "%msg%"), its own config
#   NAME        a wpod pod: the receiver as a native sidecar (listening before the shipper
#               starts), the log-shipper component SHIPPER.wasm as a Wasm sidecar following the
#               file in a hostPath volume, each line shipped as "a LINE" (2 bytes more a line)
# Each -s adds a wpod variant (default: wpod=guests/target/wasm32-wasip2/release/log-shipper.wasm),
# so a before/after pair runs interleaved. -t limits the tools (comma-separated names).
# -a MS starts the receiver MS milliseconds after the shipper instead of before it: the shipper
# meets a refused connection first and must try again (socat with `forever,interval=0.01`, a
# retry every 10 ms; wpod's shipper tries after 2 ms, doubling to 20 ms); rsyslog is left out.
#
# Per run, one JSON line on stdout: tool, mib, sink ("before" or "after"), seconds (tool start to
# last byte received; for wpod the start is the shipper sidecar's "started" event, after the pod
# and receiver are up; with -a, for every tool, from the receiver listening),
# mib_per_s (mib / seconds), stream_s (first to last byte), peak_rss_kib (VmHWM: tail + socat,
# rsyslogd, the wpod process that runs the sidecar), cpu_s (user + system of those processes,
# start-up included), ok (byte and line counts exact). A table of medians goes to stderr.
set -euo pipefail
runs=3 mib=300 wpod=/tmp/wpod-base tools="" shippers=() after=0
while getopts "r:m:w:s:t:a:" opt; do
  case $opt in
    r) runs=$OPTARG ;; m) mib=$OPTARG ;; w) wpod=$OPTARG ;; s) shippers+=("$OPTARG") ;;
    t) tools=$OPTARG ;; a) after=$OPTARG ;; *) exit 2 ;;
  esac
done
[[ $after =~ ^[0-9]+$ ]] || { echo "$0: -a takes milliseconds (a whole number), not '$after'" >&2; exit 2; }
after_s=$(awk -v ms="$after" 'BEGIN { print ms / 1000 }') # for sleep
root=$(cd "$(dirname "$0")/.." && pwd)
((${#shippers[@]})) || shippers=("wpod=$root/guests/target/wasm32-wasip2/release/log-shipper.wasm")
[[ $(id -u) == 0 ]] || { echo "$0: run as root (wpod pods)" >&2; exit 2; }

work=$(mktemp -d /tmp/wpod-logship.XXXXXX)
pids=() pods=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for p in "${pods[@]}"; do "$wpod" rm "$p" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port free now (the suite may run other benchmarks; the pods have their own loopback).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
lines=$((mib * 1048576 / 100))
# data: the file (the shipper's volume); pod: the receiver and its results (the receiver's
# volume; wpod refuses a volume nested in one a container may write).
mkdir -p "$work/data" "$work/pod"
file=$work/data/app.log
echo "writing $mib MiB ($lines lines) to $file" >&2
awk -v n="$lines" 'BEGIN { pad = sprintf("%089d", 0); for (i = 1; i <= n; i++) printf "%09d %s\n", i, pad }' > "$file"
size=$(stat -c %s "$file")

# The receiver: accepts connections until it has every line, then writes its counts and times
# (CLOCK_REALTIME, as `date`) to OUT atomically; with --stay it then waits to be killed (a
# sidecar that exits would be restarted).
cat > "$work/pod/recv.py" <<'PY'
import json, os, selectors, signal, socket, sys, time
port, want_lines, want_bytes, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(8)
with open(out + ".listening", "w") as f:
    f.write(repr(time.time()))  # when the sink could first be reached (-a measures from here)
# Every connection at once: a shipper may open a new one before the old one is closed
# (rsyslog does).
sel = selectors.DefaultSelector()
sel.register(srv, selectors.EVENT_READ)
buf = bytearray(1 << 20)
lines = nbytes = conns = 0
first = last = None
tail = b""
def pump(timeout):
    global lines, nbytes, conns, first, last, tail
    events = sel.select(timeout)
    for key, _ in events:
        if key.fileobj is srv:
            c, _ = srv.accept()
            conns += 1
            sel.register(c, selectors.EVENT_READ)
            continue
        n = key.fileobj.recv_into(buf)
        if n == 0:
            sel.unregister(key.fileobj)
            key.fileobj.close()
            continue
        last = time.time()
        if first is None:
            first = last
        nbytes += n
        lines += buf.count(b"\n", 0, n)
        tail = (tail + bytes(buf[max(0, n - 256):n]))[-256:]
    return bool(events)
while lines < want_lines:
    pump(None)
end = last
# Anything more would be a repeated line: wait a little for it.
while pump(0.3):
    pass
last_line = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode(errors="replace")
res = {"first": first, "last": end, "lines": lines, "bytes": nbytes, "conns": conns, "last_line": last_line[:40],
       "ok": lines == want_lines and nbytes == want_bytes and ("%09d " % want_lines) in last_line}
with open(out + ".tmp", "w") as f:
    json.dump(res, f)
os.rename(out + ".tmp", out)
if "--stay" in sys.argv:
    signal.pause()
PY

now() { date +%s.%N; }
wait_file() { # path, seconds, PID that must stay alive meanwhile
  local i
  for ((i = 0; i < $2 * 20; i++)); do
    [[ -e $1 ]] && return 0
    kill -0 "$3" 2>/dev/null || { echo "$1: process $3 ended first" >&2; return 1; }
    sleep 0.05
  done
  echo "timed out waiting for $1" >&2
  return 1
}
hwm() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)

# Prints one JSON line from the receiver's result and the tool's measures.
report() { # tool, start, result file, rss kib, cpu ticks
  python3 - "$@" "$mib" "$hz" "$after" <<'PY'
import json, sys
tool, start, path, rss, ticks, mib, hz, after = sys.argv[1:9]
r = json.load(open(path))
if int(after):
    start = open(path + ".listening").read()
secs = r["last"] - float(start)
print(json.dumps({"tool": tool, "mib": int(mib), "sink": "after" if int(after) else "before", "seconds": round(secs, 3), "mib_per_s": round(int(mib) / secs, 1),
                  "stream_s": round(r["last"] - r["first"], 3), "peak_rss_kib": int(rss),
                  "cpu_s": round(int(ticks) / int(hz), 2), "lines": r["lines"], "bytes": r["bytes"],
                  "conns": r["conns"], "ok": r["ok"]}))
PY
}

run_tail_socat() {
  local res=$work/res-tail start tpid spid rss ticks rpid retry=""
  rm -f "$res"*
  if ((after == 0)); then
    python3 "$work/pod/recv.py" "$port" "$lines" "$size" "$res" & rpid=$!
    pids+=("$rpid")
    wait_file "$res.listening" 10 "$rpid"
  else
    retry=,forever,interval=0.01
  fi
  rm -f "$work/fifo" && mkfifo "$work/fifo"
  start=$(now)
  tail -n +1 -F "$file" > "$work/fifo" 2>/dev/null & tpid=$!
  # With -a, socat's refused tries are expected; their messages would fill the terminal.
  if ((after > 0)); then
    socat -u - "TCP:127.0.0.1:$port$retry" < "$work/fifo" 2>/dev/null & spid=$!
  else
    socat -u - "TCP:127.0.0.1:$port" < "$work/fifo" & spid=$!
  fi
  pids+=("$tpid" "$spid")
  if ((after > 0)); then
    sleep "$after_s"
    python3 "$work/pod/recv.py" "$port" "$lines" "$size" "$res" & rpid=$!
    pids+=("$rpid")
  fi
  # The process that ends first if something goes wrong: socat (before), the receiver (after:
  # socat retries forever).
  wait_file "$res" 600 "$( ((after > 0)) && echo "$rpid" || echo "$spid")"
  rss=$(($(hwm "$tpid") + $(hwm "$spid")))
  ticks=$(($(cpu_ticks "$tpid") + $(cpu_ticks "$spid")))
  kill "$tpid" "$spid" 2>/dev/null || true
  wait "$tpid" "$spid" "$rpid" 2>/dev/null || true
  report tail-socat "$start" "$res" "$rss" "$ticks"
}

run_rsyslog() {
  local res=$work/res-rsyslog dir=$work/rsyslog start pid rss ticks
  rm -rf "$res"* "$dir" && mkdir -p "$dir/state"
  # omfwd over TCP ends each message with LF (traditional framing); the template is the line.
  cat > "$dir/rsyslog.conf" <<CONF
global(workDirectory="$dir/state")
module(load="imfile" mode="inotify")
template(name="line" type="string" string="%msg%")
ruleset(name="ship") {
  action(type="omfwd" target="127.0.0.1" port="$port" protocol="tcp" template="line")
}
input(type="imfile" file="$file" tag="app" ruleset="ship")
CONF
  python3 "$work/pod/recv.py" "$port" "$lines" "$size" "$res" & local rpid=$!
  pids+=("$rpid")
  wait_file "$res.listening" 10 "$rpid"
  start=$(now)
  rsyslogd -n -f "$dir/rsyslog.conf" -i "$dir/rsyslogd.pid" > "$dir/out" 2>&1 & pid=$!
  pids+=("$pid")
  wait_file "$res" 600 "$pid"
  rss=$(hwm "$pid") ticks=$(cpu_ticks "$pid")
  kill "$pid" 2>/dev/null || true
  wait "$pid" "$rpid" 2>/dev/null || true
  report rsyslog "$start" "$res" "$rss" "$ticks"
}

run_wpod() { # name, shipper.wasm, run number
  local name=$1 wasm=$2 pod res start pid rss ticks
  pod=logship-$$-$name-$3 res=$work/pod/res
  pod=${pod//[^a-z0-9-]/-}
  rm -f "$res"* "$work/pod/done"
  # Init sidecars start in order: the receiver first, or with -a the shipper first and the
  # receiver AFTER ms later.
  local receiver shipper
  receiver=$(cat <<YAML
  - name: receiver
    restartPolicy: Always
    command: [sh, -c, 'sleep $after_s; exec python3 /bench/recv.py $port $lines $((size + 2 * lines)) /bench/res --stay']
    volumeMounts: [{name: bench, mountPath: /bench}]
YAML
)
  # Before: the main container starts once the receiver listens, so that nothing of the pod
  # starts while the shipper runs. After: it starts during the receiver's sleep, for the same.
  ((after > 0)) || receiver+=$'\n    startupProbe:\n      exec: {command: [test, -e, /bench/res.listening]}\n      periodSeconds: 1'
  shipper=$(cat <<YAML
  - name: shipper
    restartPolicy: Always
    image: $wasm
    env:
    - {name: FILES, value: "a=/data/app.log"}
    - {name: SINK, value: "tcp://127.0.0.1:$port"}
    volumeMounts: [{name: data, mountPath: /data, readOnly: true}]
YAML
)
  if ((after > 0)); then local first=$shipper; shipper=$receiver; receiver=$first; fi
  cat > "$work/pod.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $pod}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  initContainers:
$receiver
$shipper
  containers:
  - name: main
    command: [sh, -c, "while [ ! -e /bench/done ]; do sleep 0.05; done"]
    volumeMounts: [{name: bench, mountPath: /bench}]
  volumes:
  - {name: bench, hostPath: {path: $work/pod, type: Directory}}
  - {name: data, hostPath: {path: $work/data, type: Directory}}
YAML
  pods+=("$pod")
  "$wpod" run --output json "$work/pod.yaml" > "$work/wpod.out" 2> "$work/wpod.err" & pid=$!
  pids+=("$pid")
  if ! wait_file "$res" 600 "$pid"; then tail -20 "$work/wpod.out" "$work/wpod.err" >&2; return 1; fi
  rss=$(hwm "$pid") ticks=$(cpu_ticks "$pid")
  # The tool starts when the shipper does (its "started" event), as tail and rsyslogd start
  # with their process: the pod's start-up before it (the receiver first) is not shipping.
  start=$(python3 -c '
import datetime, json, sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e.get("container") == "shipper" and e.get("event") == "started":
        print(datetime.datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp())
        break' "$work/wpod.out")
  touch "$work/pod/done"
  wait "$pid" 2>/dev/null || true
  "$wpod" rm "$pod" > /dev/null 2>&1 || true
  report "$name" "$start" "$res" "$rss" "$ticks"
}

all=(tail-socat rsyslog)
declare -A wasm_of
for s in "${shippers[@]}"; do all+=("${s%%=*}"); wasm_of[${s%%=*}]=$(realpath "${s#*=}"); done
if [[ -n $tools ]]; then IFS=, read -ra all <<< "$tools"; fi

# One small pod per component first: wpod compiles it then and caches it, so that no measured
# run pays for the compile (nor counts the compiler's memory).
for t in "${all[@]}"; do
  [[ -n ${wasm_of[$t]:-} ]] || continue
  cat > "$work/warm.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: {name: logship-$$-warm}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: shipper
    restartPolicy: Always
    image: ${wasm_of[$t]}
    env: [{name: FILES, value: "a=/data/none.log"}]
    volumeMounts: [{name: data, mountPath: /data, readOnly: true}]
  containers:
  - {name: main, command: ["true"]}
  volumes:
  - {name: data, hostPath: {path: $work/data, type: Directory}}
YAML
  pods+=("logship-$$-warm")
  "$wpod" run "$work/warm.yaml" > /dev/null 2>&1 || echo "warm-up pod of $t failed" >&2
  "$wpod" rm "logship-$$-warm" > /dev/null 2>&1 || true
done

results=$work/results.jsonl
: > "$results"
for ((i = 1; i <= runs; i++)); do
  for t in "${all[@]}"; do
    case $t in # not in a pipe: the cleanup must see the PIDs and pods a run adds
      tail-socat) run_tail_socat > "$work/row" ;;
      rsyslog) ((after == 0)) || continue; run_rsyslog > "$work/row" ;;
      *) run_wpod "$t" "${wasm_of[$t]}" "$i" > "$work/row" ;;
    esac
    tee -a "$results" < "$work/row"
    pids=() # all reaped
  done
done

python3 - "$results" >&2 <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'tool':<16} {'runs':>4} {'MiB/s':>8} {'seconds':>8} {'stream s':>8} {'peak RSS MiB':>13} {'CPU s':>7}  ok")
for tool in dict.fromkeys(r["tool"] for r in rows):
    rs = [r for r in rows if r["tool"] == tool]
    med = lambda k: statistics.median(r[k] for r in rs)
    print(f"{tool:<16} {len(rs):>4} {med('mib_per_s'):>8.1f} {med('seconds'):>8.2f} {med('stream_s'):>8.2f} "
          f"{med('peak_rss_kib') / 1024:>13.1f} {med('cpu_s'):>7.2f}  {all(r['ok'] for r in rs)}")
PY
