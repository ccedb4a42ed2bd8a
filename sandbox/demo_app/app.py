"""Demo app served by every sandbox host (stdlib only, runs under the host's python3).

Settings come from <release>/config/app.json ({"address", "port", "host"}); command-line
arguments (--address/--port/--host) or env vars DEMO_ADDRESS/DEMO_PORT/DEMO_HOST override it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

# Replaced when the release tarball is built: "normal", "broken", "slow", "errors" or "latency".
BUILD = "@BUILD@"
RELEASE_DIR = Path(__file__).resolve().parent
VERSION = (RELEASE_DIR / "VERSION").read_text().strip()
# The release's BUILD file says how this build behaves (also for a sandbox that serves every
# host from one process): {"build", "error_percent", "latency_ms"}.
_BUILD_FILE = RELEASE_DIR / "BUILD"
BEHAVIOUR: dict[str, object] = json.loads(_BUILD_FILE.read_text()) if _BUILD_FILE.exists() else {}
BUILD = str(BEHAVIOUR.get("build", BUILD))
# "errors": every n-th request to / answers 500, n = 100 / error_percent (5% → every 20th):
# deterministic, so a window of 100 requests holds exactly 5 errors. DEMO_ERROR_PERCENT overrides.
ERROR_PERCENT = float(os.environ.get("DEMO_ERROR_PERCENT") or BEHAVIOUR.get("error_percent", 5))
LATENCY_MS = float(BEHAVIOUR.get("latency_ms", 200))  # "latency": added to every request to /
PATHS = ("/", "/health", "/version", "/slow", "/metrics")


class Metrics:
    """Request counts by path and status, and a latency histogram, for Prometheus (`/metrics`);
    None-valued when the host's python3 lacks prometheus_client (then /metrics answers 501)."""

    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            self.prom = None
            return
        self.prom = prom
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter("demo_http_requests", "HTTP requests answered",
                                     ["path", "code"], registry=self.registry)
        self.latency = prom.Histogram("demo_http_request_duration_seconds",
                                      "Time to answer an HTTP request", ["path"],
                                      registry=self.registry,
                                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))

    def observe(self, path: str, code: int, seconds: float) -> None:
        if self.prom is not None:
            label = path if path in PATHS else "other"
            self.requests.labels(label, str(code)).inc()
            self.latency.labels(label).observe(seconds)

    def exposition(self) -> bytes | None:
        return self.prom.generate_latest(self.registry) if self.prom is not None else None


METRICS = Metrics()
_served = 0
_served_lock = threading.Lock()


def next_request_fails() -> bool:
    """For the "errors" build: whether this request to / is one of the failing share."""
    global _served
    if BUILD != "errors" or ERROR_PERCENT <= 0:
        return False
    with _served_lock:
        _served += 1
        return _served % max(1, round(100 / ERROR_PERCENT)) == 0


def settings() -> dict[str, object]:
    parser = argparse.ArgumentParser(description="demo app")
    parser.add_argument("--address")
    parser.add_argument("--port", type=int)
    parser.add_argument("--host")
    args = parser.parse_args()
    conf: dict[str, object] = {"address": "127.0.0.1", "port": 18080, "host": "unknown"}
    conf_file = RELEASE_DIR / "config" / "app.json"
    if conf_file.exists():
        conf.update(json.loads(conf_file.read_text()))
    for key in ("address", "port", "host"):
        env = os.environ.get(f"DEMO_{key.upper()}")
        if env:
            conf[key] = env
        if getattr(args, key) is not None:
            conf[key] = getattr(args, key)
    conf["port"] = int(str(conf["port"]))
    return conf


class Handler(BaseHTTPRequestHandler):
    host_name = "unknown"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        url = urlparse(self.path)
        self.started = time.monotonic()
        if url.path == "/":
            if BUILD == "latency":
                time.sleep(LATENCY_MS / 1000)
            if next_request_fails():
                self.reply(500, f"internal error ({BUILD} build: {ERROR_PERCENT:g}% of requests)")
                return
            body = {"app": "demo", "version": VERSION, "host": self.host_name}
            self.reply(200, json.dumps(body), "application/json")
        elif url.path == "/metrics":
            data = METRICS.exposition()
            if data is None:
                self.reply(501, "no prometheus_client in this python3 (python3-prometheus-client)")
            else:
                self.reply(200, data.decode(), "text/plain; version=0.0.4")
        elif url.path == "/health":
            if BUILD == "broken":
                self.reply(503, "unhealthy: broken build")
            else:
                self.reply(200, "ok")
        elif url.path == "/version":
            self.reply(200, VERSION)
        elif url.path == "/slow":
            seconds = float(parse_qs(url.query).get("seconds", ["1"])[0])
            time.sleep(max(0.0, min(seconds, 300.0)))
            body = {"app": "demo", "version": VERSION, "host": self.host_name, "slept": seconds}
            self.reply(200, json.dumps(body), "application/json")
        else:
            self.reply(404, "not found")

    def reply(self, code: int, body: str, content_type: str = "text/plain") -> None:
        data = (body + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Demo-Host", self.host_name)
        self.send_header("X-Demo-Version", VERSION)
        self.end_headers()
        self.wfile.write(data)
        METRICS.observe(urlparse(self.path).path, code,
                        time.monotonic() - getattr(self, "started", time.monotonic()))

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        # Health checks arrive every 300 ms: log only what is not a successful check.
        if ("/health" in self.path and BUILD != "broken") or "/metrics" in self.path:
            return
        sys.stderr.write(f"{self.log_date_time_string()} {self.address_string()} {format % args}\n")


def main() -> None:
    conf = settings()
    Handler.host_name = str(conf["host"])
    print(f"demo {VERSION} ({BUILD}) pid {os.getpid()} starting on "
          f"{conf['address']}:{conf['port']} as {conf['host']}", flush=True)
    if BUILD == "slow":
        time.sleep(4.0)
    server = ThreadingHTTPServer((str(conf["address"]), int(str(conf["port"]))), Handler)
    server.daemon_threads = True
    # TERM raises SystemExit in serve_forever, so the listening socket closes right away.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"demo {VERSION} listening", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
