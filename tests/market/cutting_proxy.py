#!/usr/bin/env python3
"""A registry proxy that breaks one download: it forwards every request to UPSTREAM, but for
the blob whose digest is CUT it sends the headers and half the body, then drops the
connection (a registry going down mid-pull).

    cutting_proxy.py PORT UPSTREAM CUT
"""

import http.server
import sys
import urllib.error
import urllib.request

PORT, UPSTREAM, CUT = int(sys.argv[1]), sys.argv[2], sys.argv[3]
HOP = {"connection", "transfer-encoding", "keep-alive"}


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def forward(self, method):
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        req = urllib.request.Request(f"http://{UPSTREAM}{self.path}", method=method, headers=headers)
        try:
            resp = urllib.request.urlopen(req)
        except urllib.error.HTTPError as e:
            resp = e
        body = resp.read() if method == "GET" else b""
        self.send_response(resp.status if hasattr(resp, "status") else resp.code)
        for k, v in resp.headers.items():
            if k.lower() not in HOP:
                self.send_header(k, v)
        self.end_headers()
        if method == "GET" and f"/blobs/{CUT}" in self.path:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def do_GET(self):
        self.forward("GET")

    def do_HEAD(self):
        self.forward("HEAD")

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Proxy).serve_forever()
