"""Not a protocol simulator: a fault-injecting HTTP proxy in front of a real server (moto's EC2/EBS, Glance).

Forwards every request unchanged, except those whose method and path match a
rule (after the first `after` of them, and at most `times` of them when given),
which it answers itself: by default
with an AWS REST-JSON error (HTTP 400, x-amzn-ErrorType) the way EBS direct
APIs report a refused call; with `error=None`, with `status` and a JSON
{"message": ...} body the way Glance reports a failure (e.g. 500 for an
upload its store refused). `seen` records every request as (method, path,
status answered). Used to test that Rain deletes a half-made snapshot or
image when the target API fails part-way.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class FaultProxy:
    def __init__(self, upstream: str, method: str, path_pattern: str, after: int = 0,
                 error: str | None = "ValidationException", message: str = "simulated refusal",
                 status: int = 400, times: int | None = None) -> None:
        self.upstream, self.method, self.after, self.times = upstream.rstrip("/"), method, after, times
        self.pattern = re.compile(path_pattern)
        self.upstream_host = urlsplit(upstream).netloc
        self.error, self.message, self.status = error, message, status
        self.matched = 0
        self.seen: list[tuple[str, str, int]] = []
        """(method, path, status) of every request, answered here or upstream."""
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == proxy.method and proxy.pattern.search(self.path):
                    with proxy.lock:
                        proxy.matched += 1
                        fail = proxy.matched > proxy.after and (
                            proxy.times is None or proxy.matched <= proxy.after + proxy.times)
                    if fail:
                        data = json.dumps({"message": proxy.message}).encode()
                        with proxy.lock:
                            proxy.seen.append((self.command, self.path, proxy.status))
                        self.send_response(proxy.status)
                        if proxy.error:
                            self.send_header("x-amzn-ErrorType", proxy.error)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "expect")}
                conn = http.client.HTTPConnection(proxy.upstream_host, timeout=60)  # adds no headers of its own
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    status, rheaders, data = resp.status, resp.getheaders(), resp.read()
                finally:
                    conn.close()
                with proxy.lock:
                    proxy.seen.append((self.command, self.path, status))
                self.send_response(status)
                for k, v in rheaders:
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True, name="fault-proxy").start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
