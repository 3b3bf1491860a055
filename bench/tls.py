"""bench/tls.sh's runner: the wrk matrix against the three TLS proxies of the running pod, the
proxies' CPU from /proc, then JSON to a file and markdown to stdout.

Argument: one JSON object from tls.sh (wpod, pod, work, out, rounds, duration, perf, and the
host PIDs of the wpod supervisor, the backend nginx, the nginx and the haproxy containers)."""

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter

cfg = json.loads(sys.argv[1])
ROUNDS, DURATION, PERF = int(cfg["rounds"]), int(cfg["duration"]), cfg["perf"] == "1"
# --json: rows for bench/run.sh on stdout, the markdown on stderr.
JSON_ROWS = sys.stdout if cfg.get("json") == "1" else None
if JSON_ROWS:
    sys.stdout = sys.stderr
WORK, WPOD, POD = cfg["work"], cfg["wpod"], cfg["pod"]
NETNS = cfg["backend"]  # any process of the pod's network namespace
LUA = f"{WORK}/report.lua"
HZ = os.sysconf("SC_CLK_TCK")
WRK_TIMEOUT = "30s"  # wrk counts a response slower than --timeout as an error, not a latency

CONNS = [1, 10, 100]
MODES = ["keep-alive", "close"]
BODIES = ["1k", "1m"]
BODY_NAMES = {"1k": "1 KiB", "1m": "1 MiB"}
# tls-proxy: TLS in the host (wpod:sidecar/tls); tls-proxy-wasm: the same sidecar with
# TLS_ENGINE=guest, rustls with a pure-Rust provider inside Wasm (what it did before).
PROXIES = [("tls-proxy", 8443), ("tls-proxy-wasm", 8446), ("nginx", 8444), ("haproxy", 8445)]


def children():
    """ppid -> [pid] for every process on the host."""
    kids = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p))
    return kids


def tree(pid):
    kids, out, todo = children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def proxy_pids(name):
    # The Wasm sidecar runs inside the supervisor (`wpod run`, all its threads): only that process,
    # not its children (the holder, the container shims and the native containers).
    if name.startswith("tls-proxy"):
        return [int(cfg["sup"])]
    return tree(int(cfg[name]))


def cpu_ticks(pids):
    """utime + stime of these processes (every thread of each), in clock ticks."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
        except OSError:
            pass
    return total


def host_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)  # busy (all but idle and iowait), total


def wrk(port, body, conns, mode, duration):
    cmd = ["nsenter", "-t", str(NETNS), "-n", "wrk", "-t", str(min(conns, 2)), "-c", str(conns),
           "-d", f"{duration}s", "--timeout", WRK_TIMEOUT, "-s", LUA]
    if mode == "close":
        cmd += ["-H", "Connection: close"]
    cmd.append(f"https://127.0.0.1:{port}/{body}")
    return cmd


def parse(stdout):
    for line in stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[8:])
    raise RuntimeError("no report from wrk:\n" + stdout)


def log_path(container):
    for cand in (f"{WORK}/wpodroot/logs/{POD}/{container}.log",
                 f"{WORK}/wpodroot/pods/{POD}/logs/{container}.log"):
        if os.path.exists(cand):
            return cand
    return None


def log_size(container):
    p = log_path(container)
    return os.path.getsize(p) if p else 0


def log_lines(container, start):
    p = log_path(container)
    if not p:
        return []
    with open(p, "rb") as f:
        f.seek(start)
        return f.read().decode(errors="replace").splitlines()


def run_one(name, port, body, conns, mode, duration=DURATION):
    pids, backend = proxy_pids(name), tree(int(cfg["backend"]))
    log0 = log_size(name)
    b0, t0 = host_busy()
    c0, k0 = cpu_ticks(pids), cpu_ticks(backend)
    res = subprocess.run(wrk(port, body, conns, mode, duration), capture_output=True, text=True)
    c1, k1 = cpu_ticks(pids), cpu_ticks(backend)
    b1, t1 = host_busy()
    if res.returncode != 0:
        raise RuntimeError(f"wrk failed ({res.returncode}): {res.stderr}{res.stdout}")
    r = parse(res.stdout)
    secs = r["duration_us"] / 1e6
    n = r["requests"]
    logs = log_lines(name, log0)
    return {
        "proxy": name, "body": body, "mode": mode, "conns": conns, "threads": min(conns, 2),
        "requests": n, "seconds": secs,
        "req_s": n / secs,
        "mib_s": r["bytes"] / secs / (1 << 20),
        # Little's law: what each request took from the client's view, handshake and accept
        # queue included (wrk's own latency starts once the connection is up).
        "ms_per_req": conns * secs / n * 1e3 if n else None,
        "p50_ms": r["p50_us"] / 1e3 if n else None,
        "p99_ms": r["p99_us"] / 1e3 if n else None,
        "wrk_mean_ms": r["lat_mean_us"] / 1e3 if n else None,
        "errors": {k: r[k] for k in ("connect", "read", "write", "timeout", "status")},
        "proxy_cpu_s": (c1 - c0) / HZ,
        "cpu_us_per_req": (c1 - c0) / HZ * 1e6 / n if n else None,
        "backend_cpu_us_per_req": (k1 - k0) / HZ * 1e6 / n if n else None,
        "host_busy_pct": 100 * (b1 - b0) / max(t1 - t0, 1),
        "proxy_log_lines": len(logs),
        # CRI lines ("TIME stream F message"): the messages, counted.
        "proxy_log_messages": dict(Counter(l.split(" ", 3)[-1] for l in logs)),
    }


def emit_row(r):
    """One run as a bench/run.sh row: req/s for 1 KiB bodies, MiB/s for 1 MiB ones."""
    unit, key = ("req/s", "req_s") if r["body"] == "1k" else ("MiB/s", "mib_s")
    mode = "keep-alive" if r["mode"] == "keep-alive" else "new conn"
    row = {"tool": r["proxy"], "measure": f"tls: {BODY_NAMES[r['body']]}, {mode}, {r['conns']} conns",
           "value": round(r[key], 2), "unit": unit, "run": r["round"], "better": "higher",
           "ref": r["proxy"] == "tls-proxy", "cpu_us_per_req": r["cpu_us_per_req"],
           "errors": sum(r["errors"].values())}
    print(json.dumps(row), file=JSON_ROWS, flush=True)


def tls_params(port):
    """What the proxy negotiates with OpenSSL's defaults (as wrk's), and whether it resumes."""
    sess = f"{WORK}/sess-{port}.pem"
    req = "GET /1k HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    base = ["nsenter", "-t", str(NETNS), "-n", "openssl", "s_client", "-connect", f"127.0.0.1:{port}",
            "-servername", "localhost", "-ign_eof"]
    first = subprocess.run(base + ["-sess_out", sess], input=req.encode(), capture_output=True, timeout=20)
    text = first.stdout.decode(errors="replace")
    second = subprocess.run(base + ["-sess_in", sess], input=req.encode(), capture_output=True, timeout=20) \
        if os.path.exists(sess) else None
    grab = lambda pat: (m.group(1).strip() if (m := re.search(pat, text, re.M)) else None)
    return {
        "protocol": grab(r"^New, (TLSv[\d.]+)"),
        "cipher": grab(r"^New, TLSv[\d.]+, Cipher is (\S+)"),
        "group": grab(r"^(?:Server|Peer) Temp Key: (.*)$"),
        "signature": grab(r"^(?:Peer|Server) signature type: (.*)$"),
        "resumes": bool(second and re.search(rb"^Reused,", second.stdout, re.M)),
    }


def perf_cell(body, mode, conns):
    data = f"{cfg['out'].rsplit('.json', 1)[0]}.perf-{body}-{mode}-{conns}.data"
    perf = subprocess.Popen(["perf", "record", "-g", "-q", "-p", str(cfg["sup"]), "-o", data,
                             "--", "sleep", str(DURATION)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.2)
    r = run_one("tls-proxy", 8443, body, conns, mode, max(DURATION - 1, 1))
    perf.wait()
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "symbol", "--stdio",
                          "-g", "none"], capture_output=True, text=True)
    # (Trailing columns perf adds for this sort, "-  -", are cut.)
    top = [re.sub(r"(\s+-)*\s*$", "", l) for l in rep.stdout.splitlines() if l.strip() and not l.startswith("#")][:25]
    # By object too: JIT-compiled guest code (no symbols) adds up under an anonymous mapping.
    dso = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso", "--stdio", "-g", "none"],
                         capture_output=True, text=True)
    by_dso = [re.sub(r"(\s+-)*\s*$", "", l) for l in dso.stdout.splitlines() if l.strip() and not l.startswith("#")][:8]
    return {"body": body, "conns": conns, "mode": mode, "data": data, "req_s": r["req_s"],
            "top": top, "by_dso": by_dso}


def med(runs, key):
    vals = [r[key] for r in runs if r[key] is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def fmt(x, digits=3):
    if x is None:
        return "–"
    if x == 0:
        return "0"
    if abs(x) >= 10 ** (digits - 1):
        return f"{x:.0f}"
    return f"{x:.{max(digits - 1 - int(__import__('math').floor(__import__('math').log10(abs(x)))), 0)}f}"


def cell_str(s):
    if s is None:
        return "–"
    if ROUNDS == 1 or s["min"] == s["max"]:
        return fmt(s["median"])
    return f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])})"


def main():
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load0 = open("/proc/loadavg").read().split()[:3]
    tls = {name: tls_params(port) for name, port in PROXIES}
    for name, port in PROXIES:  # warm-up: caches, page faults, wasmtime's first connections
        run_one(name, port, "1k", 10, "keep-alive", 1)
    cells = [(b, m, c) for b in BODIES for m in MODES for c in CONNS]
    runs = []
    total = ROUNDS * len(cells) * len(PROXIES)
    for rnd in range(ROUNDS):
        for i, (body, mode, conns) in enumerate(cells):
            k = (rnd + i) % len(PROXIES)
            for name, port in PROXIES[k:] + PROXIES[:k]:
                r = run_one(name, port, body, conns, mode)
                r["round"] = rnd
                runs.append(r)
                if JSON_ROWS:
                    emit_row(r)
                print(f"[{len(runs)}/{total}] round {rnd + 1} {BODY_NAMES[body]} {mode} c={conns} {name}: "
                      f"{r['req_s']:.0f} req/s, {r['mib_s']:.1f} MiB/s", file=sys.stderr, flush=True)
    perf = ([perf_cell("1k", "keep-alive", 100), perf_cell("1m", "keep-alive", 100),
             perf_cell("1k", "close", 10)] if PERF else [])
    ps = json.loads(subprocess.run([WPOD, "ps", "--output", "json"], capture_output=True, text=True,
                                   env={**os.environ, "WPOD_ROOT": f"{WORK}/wpodroot"}).stdout or "[]")
    restarts = {c["name"]: c["restarts"] for p in ps if p["name"] == POD for c in p["containers"]}
    states = {c["name"]: c["state"] for p in ps if p["name"] == POD for c in p["containers"]}

    summary = []
    keys = ["req_s", "mib_s", "ms_per_req", "p50_ms", "p99_ms", "cpu_us_per_req", "backend_cpu_us_per_req",
            "host_busy_pct"]
    for body, mode, conns in cells:
        for name, _ in PROXIES:
            rs = [r for r in runs if (r["body"], r["mode"], r["conns"], r["proxy"]) == (body, mode, conns, name)]
            s = {"proxy": name, "body": body, "mode": mode, "conns": conns, "threads": min(conns, 2),
                 "rounds": len(rs), **{k: med(rs, k) for k in keys},
                 "errors": {k: sum(r["errors"][k] for r in rs) for k in rs[0]["errors"]},
                 "requests": sum(r["requests"] for r in rs),
                 "proxy_log_lines": sum(r["proxy_log_lines"] for r in rs)}
            summary.append(s)
    ratios = []
    for body, mode, conns in cells:
        get = lambda n, k: next(s for s in summary if (s["body"], s["mode"], s["conns"], s["proxy"]) == (body, mode, conns, n))[k]
        row = {"body": body, "mode": mode, "conns": conns}
        for other in ("nginx", "haproxy"):
            for k in ("req_s", "mib_s"):
                a, b = get("tls-proxy", k), get(other, k)
                row[f"{k}_tls_proxy_over_{other}"] = a["median"] / b["median"] if a and b and b["median"] else None
        ratios.append(row)

    notes = [
        "wrk runs in the pod's network namespace (nsenter); no hostPort forwarder is involved.",
        "ms/req = connections x duration / requests (Little's law): the time per request a client "
        "sees including the TLS handshake and accept queueing; wrk's p50/p99 start after the handshake.",
        "CPU us/req: utime+stime delta over the wrk run / requests. nginx: master + worker; haproxy: its "
        "process; tls-proxy: the pod's `wpod run` supervisor process (pid %s), all of its threads: wasmtime "
        "running the guest, WASI socket I/O, and the supervisor's own work (probes, logs), not its children."
        % cfg["sup"],
        "tls-proxy relays each client connection to a backend connection of its own (as stunnel or a "
        "TCP-mode proxy), so keep-alive passes through; nginx and haproxy pool backend connections.",
        "tls-proxy-wasm (TLS_ENGINE=guest) serves one request per connection (Connection: close "
        "upstream), so its keep-alive rows make a new TLS connection per request too.",
        "errors are summed over rounds; wrk --timeout is %s, so slow responses count as requests, "
        "and requests still in flight at the end of a run are not counted at all." % WRK_TIMEOUT,
        "wrk resumes TLS sessions (its SSL object keeps the session across reconnects), and all three "
        "proxies accept resumption (see the TLS table): new-connection rows measure resumed TLS 1.3 "
        "handshakes (PSK with X25519, no certificate signature), not full ones.",
        "The machine has %d CPUs; wrk, the proxy and the backend share them." % os.cpu_count(),
    ]
    result = {
        "started": started, "wpod": WPOD, "rounds": ROUNDS, "duration_s": DURATION,
        "loadavg_start": load0, "loadavg_end": open("/proc/loadavg").read().split()[:3],
        "cpus": os.cpu_count(), "tls": tls, "pids": {k: cfg[k] for k in ("sup", "backend", "nginx", "haproxy")},
        "container_restarts": restarts, "container_states": states,
        "notes": notes, "summary": summary, "ratios": ratios, "perf": perf, "runs": runs,
    }
    with open(cfg["out"], "w") as f:
        json.dump(result, f, indent=1)

    print(f"# TLS termination: {ROUNDS} round(s) x {DURATION} s per cell, medians (min–max)\n")
    print("| proxy | TLS | cipher | group | resumption |\n|---|---|---|---|---|")
    for name, _ in PROXIES:
        t = tls[name]
        print(f"| {name} | {t['protocol']} | {t['cipher']} | {t['group']} | {'yes' if t['resumes'] else 'no'} |")
    print()
    print("| body | mode | conns | proxy | req/s | MiB/s | ms/req | p50 ms | p99 ms | proxy CPU µs/req | errors |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for s in summary:
        errs = ", ".join(f"{k} {v}" for k, v in s["errors"].items() if v) or "0"
        print(f"| {BODY_NAMES[s['body']]} | {s['mode']} | {s['conns']} | {s['proxy']} | {cell_str(s['req_s'])} | "
              f"{cell_str(s['mib_s'])} | {cell_str(s['ms_per_req'])} | {cell_str(s['p50_ms'])} | "
              f"{cell_str(s['p99_ms'])} | {cell_str(s['cpu_us_per_req'])} | {errs} |")
    print()
    print("| body | mode | conns | req/s tls-proxy/nginx | req/s tls-proxy/haproxy | MiB/s tls-proxy/nginx | MiB/s tls-proxy/haproxy |")
    print("|---|---|---:|---:|---:|---:|---:|")
    f2 = lambda x: "–" if x is None else f"{x:.3f}"
    for r in ratios:
        print(f"| {BODY_NAMES[r['body']]} | {r['mode']} | {r['conns']} | {f2(r['req_s_tls_proxy_over_nginx'])} | "
              f"{f2(r['req_s_tls_proxy_over_haproxy'])} | {f2(r['mib_s_tls_proxy_over_nginx'])} | "
              f"{f2(r['mib_s_tls_proxy_over_haproxy'])} |")
    print()
    for n in notes:
        print(f"- {n}")
    bad = {k: v for k, v in restarts.items() if v} | {k: v for k, v in states.items() if v != "running"}
    if bad:
        print(f"- WARNING: containers restarted or not running at the end: {bad}")
    for name, _ in PROXIES:
        msgs = Counter()
        for r in runs:
            if r["proxy"] == name:
                msgs.update(r["proxy_log_messages"])
        if msgs:
            top = "; ".join(f"{n}x `{m}`" for m, n in msgs.most_common(4))
            print(f"- {name} logged {sum(msgs.values())} lines during the runs: {top}")
    print(f"- load average at start {' '.join(load0)}, at end {' '.join(result['loadavg_end'])}")
    for p in perf:
        print(f"\n## perf: tls-proxy, {BODY_NAMES[p['body']]}, {p['mode']}, {p['conns']} connections "
              f"({p['req_s']:.0f} req/s while recorded; {p['data']})\n")
        print("JIT-compiled guest code has no symbols (wasmtime writes no perf map): it shows as raw addresses.\n")
        print("```\n" + "\n".join(p["top"]) + "\n```")
        print("\nBy object (`--sort dso`):\n\n```\n" + "\n".join(p["by_dso"]) + "\n```")
    print(f"\nJSON: {cfg['out']}")


main()
