"""A webhook receiver on loopback for tests: records each JSON POST, answers scripted codes."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from contextlib import contextmanager


class Receiver:
    """``url`` takes POSTs; ``bodies`` holds them in order; ``codes`` answers the first ones."""

    def __init__(self, server: ThreadingHTTPServer, codes: list[int]) -> None:
        self.server = server
        self.codes = list(codes)
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def events(self, run_id: str | None = None) -> list[str]:
        with self.lock:
            return [b["event"] for b in self.bodies if run_id is None or b.get("run_id") == run_id]

    def of(self, event: str, run_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [b for b in self.bodies
                    if b["event"] == event and (run_id is None or b.get("run_id") == run_id)]


@contextmanager
def receiver(codes: list[int] | None = None, host: str = "127.0.0.1") -> Iterator[Receiver]:
    """A running receiver, shut down on exit even when the test fails."""
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            rec = holder["r"]
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with rec.lock:
                code = rec.codes.pop(0) if rec.codes else 200
                if code < 300:
                    rec.bodies.append(json.loads(data))
                    rec.paths.append(self.path)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    holder["r"] = rec = Receiver(server, codes or [])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
