"""health-check: a wpod sidecar written in Python (componentize-py).

It checks the main container over the pod's localhost with an HTTP GET until it answers with a
2xx or 3xx status, then calls lifecycle.ready() (as a native sidecar it holds the containers
after it back until then), and keeps checking every INTERVAL_MS, printing changes, until the pod
stops it.

Configuration (env): TARGET (host:port, default 127.0.0.1:80), URL_PATH (default /),
INTERVAL_MS (default 1000).

CPython here has no `socket` module, so it talks to wasi:sockets directly: the same TCP the
pod's grants allow any sidecar (connect to the pod's loopback).
"""

import os

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import instance_network, lifecycle, network, tcp_create_socket


def http_status(host: str, port: int, path: str) -> int:
    """One GET; the status code, or raises with why there is none."""
    ip = tuple(int(part) for part in host.split("."))
    sock = tcp_create_socket.create_tcp_socket(network.IpAddressFamily.IPV4)
    target = network.IpSocketAddress_Ipv4(network.Ipv4SocketAddress(port=port, address=ip))
    sock.start_connect(instance_network.instance_network(), target)
    ready = sock.subscribe()
    while True:
        try:
            rx, tx = sock.finish_connect()
            break
        except Err as e:
            if e.value != network.ErrorCode.WOULD_BLOCK:
                raise RuntimeError(f"connect: {e.value}")
            ready.block()
    request = f"GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: wpod-health-check-py\r\n\r\n"
    tx.blocking_write_and_flush(request.encode())
    head = b""
    while b"\r\n" not in head and len(head) < 256:
        try:
            chunk = rx.blocking_read(256)
        except Err:
            break
        if not chunk:
            break
        head += chunk
    line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise RuntimeError(f"not HTTP: {line!r}")
    return int(parts[1])


def check(host: str, port: int, path: str) -> str:
    try:
        status = http_status(host, port, path)
        return "healthy" if 200 <= status < 400 else f"unhealthy (HTTP {status})"
    except Exception as e:  # a refused connection, a closed stream
        return f"unhealthy ({e})"


class Run(exports.Run):
    def run(self) -> None:
        host, _, port = os.environ.get("TARGET", "127.0.0.1:80").partition(":")
        path = os.environ.get("URL_PATH", "/")
        interval = int(os.environ.get("INTERVAL_MS", "1000"))
        print(f"checking http://{host}:{port}{path} every {interval} ms", flush=True)
        last = None
        while True:
            state = check(host, int(port), path)
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
