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
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

# Replaced when the release tarball is built: "normal", "broken" or "slow".
BUILD = "@BUILD@"
RELEASE_DIR = Path(__file__).resolve().parent
VERSION = (RELEASE_DIR / "VERSION").read_text().strip()


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
        if url.path == "/":
            body = {"app": "demo", "version": VERSION, "host": self.host_name}
            self.reply(200, json.dumps(body), "application/json")
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

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        # Health checks arrive every 300 ms: log only what is not a successful check.
        if "/health" in self.path and BUILD != "broken":
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
