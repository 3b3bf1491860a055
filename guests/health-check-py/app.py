"""health-check: a wpod sidecar written in Python (componentize-py).

It checks the main container over the pod's localhost with an HTTP GET until it answers with a
2xx or 3xx status, then calls lifecycle.ready() (as a native sidecar it holds the containers
after it back until then), and keeps checking every INTERVAL_MS, printing changes, until the pod
stops it.

Configuration (env): TARGET (host:port, default 127.0.0.1:80), URL_PATH (default /),
INTERVAL_MS (default 1000).

The standard library's http.client does the GET, over the TCP the pod's grants allow any
sidecar (connect to the pod's loopback).
"""

# componentize-py keeps only the modules imported at build time, and socket loads the `idna`
# codec lazily (to encode the host name): without this, every connect fails with
# "LookupError: unknown encoding: idna". (wpod_sidecar.py, the SDK of `wpod new`, imports it.)
import encodings.idna  # noqa: F401
import http.client
import os

from wit_world import exports
from wit_world.imports import lifecycle


def http_status(host: str, port: int, path: str, timeout_s: float) -> int:
    """One GET; the status code, or raises with why there is none."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers={"User-Agent": "wpod-health-check-py"})
        return conn.getresponse().status
    finally:
        conn.close()


def check(host: str, port: int, path: str, timeout_s: float) -> str:
    try:
        status = http_status(host, port, path, timeout_s)
        return "healthy" if 200 <= status < 400 else f"unhealthy (HTTP {status})"
    except Exception as e:  # a refused connection, a timeout, not HTTP
        return f"unhealthy ({e})"


class Run(exports.Run):
    def run(self) -> None:
        host, _, port = os.environ.get("TARGET", "127.0.0.1:80").partition(":")
        path = os.environ.get("URL_PATH", "/")
        interval = int(os.environ.get("INTERVAL_MS", "1000"))
        timeout_s = max(1.0, interval / 1000)
        print(f"checking http://{host}:{port}{path} every {interval} ms", flush=True)
        last = None
        while True:
            state = check(host, int(port), path, timeout_s)
            if state != last:
                print(f"main container is {state}", flush=True)
                if last is None or last.startswith("unhealthy"):
                    if state == "healthy":
                        lifecycle.ready()
                last = state
            event = lifecycle.next_event(interval)
            if isinstance(event, lifecycle.Event_Stopping):
                print(f"stopping with {event.value} ms left", flush=True)
                return
