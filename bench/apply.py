#!/usr/bin/env python3
"""Live sidecar replace, measured (driven by bench/apply.sh; see there for the method).

Each case runs a pod whose main container is nginx (the same image from the same local
registry for wpod and podman) and whose sidecar answers on a published port with its version.
A client requests nginx's page without pause (a new connection per request) for the whole run,
recording each request's start, latency and outcome. Each round replaces the sidecar with the
other version and records how long from the command's start until the new version answers on the
sidecar's port, then how the main container's requests fared in that window.

Usage: apply.py ROUNDS CASE... ; a CASE is NAME=KIND:ARGS, see bench/apply.sh.
"""
import json
import socket
import statistics
import subprocess
import sys
import threading
import time

NGINX = ("127.0.0.1", 18591)
SIDECAR = ("127.0.0.1", 19591)


ERRORS = {}


def get(addr, path, timeout=2.0):
    """One HTTP/1.0 GET on a new connection: the body, or None (why is counted in ERRORS)."""
    try:
        with socket.create_connection(addr, timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0] + b" ":
            return None
        return body.decode(errors="replace")
    except OSError as e:
        if addr == NGINX:
            key = type(e).__name__ + ": " + str(e)
            ERRORS[key] = ERRORS.get(key, 0) + 1
        return None


class Client(threading.Thread):
    """Requests nginx's page over and over: (start, seconds, ok) per request."""

    def __init__(self):
        super().__init__(daemon=True)
        self.records = []
        self.stop = False

    def run(self):
        while not self.stop:
            t = time.monotonic()
            ok = get(NGINX, "/") is not None
            self.records.append((t, time.monotonic() - t, ok))
            # Paced (a busy service, not a load test): a few hundred requests a second, so
            # the host's ephemeral ports are not what fails.
            time.sleep(0.002)

    def window(self, start, end):
        return [r for r in self.records if start <= r[0] <= end]


def wait_version(marker, limit=120.0):
    """Polls the sidecar's port until its answer contains `marker`; the time it did."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        body = get(SIDECAR, "/metrics", timeout=1.0)
        if body is not None and marker in body:
            return time.monotonic()
        time.sleep(0.002)
    raise SystemExit(f"the sidecar never answered with {marker!r}")


def run(cmd):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{cmd}: exit {r.returncode}\n{r.stdout}{r.stderr}")


def stats(records):
    lat = sorted(r[1] * 1000 for r in records if r[2])
    failed = sum(1 for r in records if not r[2])

    def pct(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    return {
        "requests": len(records),
        "failed": failed,
        "p50_ms": round(pct(0.5), 2),
        "p99_ms": round(pct(0.99), 2),
        "max_ms": round(lat[-1], 2) if lat else None,
    }


def main():
    rounds = int(sys.argv[1])
    cases = json.loads(sys.argv[2])
    results = {}
    for case in cases:
        name = case["name"]
        try:
            results[name] = measure(case, rounds)
        except SystemExit as e:
            results[name] = {"error": str(e)}
        print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
    report(results)
    if ERRORS:
        print("main container request errors:", json.dumps(ERRORS), file=sys.stderr)


def measure(case, rounds):
    run(case["start"])
    wait_version(case["markers"][0])
    end = time.monotonic() + 60
    while get(NGINX, "/") is None:
        if time.monotonic() > end:
            raise SystemExit("nginx never answered")
        time.sleep(0.01)
    client = Client()
    client.start()
    try:
        return rounds_of(case, rounds, client)
    finally:
        client.stop = True
        client.join()
        run(case["stop"])


def rounds_of(case, rounds, client):
    time.sleep(2)
    base_end = time.monotonic()
    baseline = client.window(base_end - 2, base_end)
    replace = []
    windows = []
    for i in range(rounds):
        version = (i + 1) % 2
        t0 = time.monotonic()
        run(case["replace"][version])
        t1 = wait_version(case["markers"][version])
        replace.append((t1 - t0) * 1000)
        time.sleep(0.5)
        windows.extend(client.window(t0, t1 + 0.5))
    return {
        "rounds": rounds,
        "replace_ms_median": round(statistics.median(replace), 1),
        "replace_ms_min": round(min(replace), 1),
        "replace_ms_max": round(max(replace), 1),
        "main_baseline": stats(baseline),
        "main_during_replace": stats(windows),
    }


def report(results):
    print(json.dumps(results, indent=2))
    print()
    print(f"{'case':<24} {'replace ms (median, range)':<28} {'main p50/p99/max ms during':<28} failed/requests")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<24} failed: {r['error']}")
            continue
        d = r["main_during_replace"]
        print(
            f"{name:<24} {r['replace_ms_median']:>8} ({r['replace_ms_min']}-{r['replace_ms_max']})"
            f"{'':<8} {d['p50_ms']}/{d['p99_ms']}/{d['max_ms']:<16} {d['failed']}/{d['requests']}"
        )
        b = r["main_baseline"]
        print(f"{'  (no change, 2 s)':<24} {'':<28} {b['p50_ms']}/{b['p99_ms']}/{b['max_ms']:<16} {b['failed']}/{b['requests']}")


if __name__ == "__main__":
    main()
