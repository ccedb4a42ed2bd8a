"""One process serving the demo app of many sandbox hosts (the sandbox's scale mode).

Each host's app listens on its own address:port, like the per-host app.py, and answers with the
version of the release its demo-ctl started (the one `current` pointed at). demo-ctl talks to
this process over a line protocol on 127.0.0.1 (one request, one answer line, tab-separated):

    start <TAB> deploy_root <TAB> release_dir  →  ok demo started (release V)
    stop <TAB> deploy_root [<TAB> release_dir] →  ok demo stopped
    status <TAB> deploy_root [<TAB> …]         →  ok demo running (…) | off demo not running
    ping                                       →  ok pid P, N hosts serving

A stopped host's listener is closed and its open connections dropped, so a release's restart
is as real as with one process per host. Builds behave as app.py's, read from the release's
BUILD file (or the marker in its app.py): "broken" answers /health with 503, "slow" listens
only 4 s after its start, "errors" answers every n-th request to / with 500, "latency" adds
latency_ms to each. /metrics has app.py's metric names, per host. stdlib only, like app.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

SLOW_START_SECONDS = 4.0  # what app.py's "slow" build sleeps before it listens
MAX_HEAD = 64 * 1024
_BUILD_RE = re.compile(r'^BUILD = "([A-Za-z0-9_.-]+)"', re.MULTILINE)
_REASONS = {200: "OK", 404: "Not Found", 500: "Internal Server Error", 501: "Not Implemented",
            503: "Service Unavailable"}
PATHS = ("/", "/health", "/version", "/slow", "/metrics")  # app.py's metric labels
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class Build:
    """How a release behaves: app.py's BUILD marker and its BUILD file's settings."""

    name: str = "normal"
    error_percent: float = 5.0
    latency_ms: float = 200.0


def read_build(release_dir: Path) -> Build:
    """The release's build: its BUILD file (JSON, or a bare name) if it has one, else app.py's marker."""
    marker = release_dir / "BUILD"
    if marker.is_file():
        text = marker.read_text().strip()
        if not text.startswith("{"):
            return Build(text or "normal")
        conf = json.loads(text)
        return Build(str(conf.get("build", "normal")), float(conf.get("error_percent", 5)),
                     float(conf.get("latency_ms", 200)))
    match = _BUILD_RE.search((release_dir / "app.py").read_text(errors="replace"))
    return Build(match.group(1) if match else "normal")


class Metrics:
    """One host's request counts by path and status and latency histogram, in Prometheus text."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.buckets: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, path: str, code: int, seconds: float) -> None:
        label = path if path in PATHS else "other"
        self.requests[(label, code)] = self.requests.get((label, code), 0) + 1
        counts = self.buckets.setdefault(label, [0] * (len(BUCKETS) + 1))
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                counts[i] += 1
        counts[-1] += 1
        self.sums[label] = self.sums.get(label, 0.0) + seconds

    def exposition(self) -> str:
        lines = ["# HELP demo_http_requests_total HTTP requests answered",
                 "# TYPE demo_http_requests_total counter"]
        lines += [f'demo_http_requests_total{{code="{code}",path="{path}"}} {n}.0'
                  for (path, code), n in sorted(self.requests.items())]
        lines += ["# HELP demo_http_request_duration_seconds Time to answer an HTTP request",
                  "# TYPE demo_http_request_duration_seconds histogram"]
        for path, counts in sorted(self.buckets.items()):
            bounds = [*(repr(float(b)) for b in BUCKETS), "+Inf"]
            lines += [f'demo_http_request_duration_seconds_bucket{{le="{le}",path="{path}"}} {n}.0'
                      for le, n in zip(bounds, counts)]
            lines += [f'demo_http_request_duration_seconds_count{{path="{path}"}} {counts[-1]}.0',
                      f'demo_http_request_duration_seconds_sum{{path="{path}"}} {self.sums[path]}']
        return "\n".join(lines)


@dataclass
class Release:
    """What one host serves: read from the release directory when its app starts."""

    dir: Path
    version: str
    build: Build
    host: str
    address: str
    port: int

    @classmethod
    def read(cls, release_dir: Path) -> Release:
        conf = json.loads((release_dir / "config" / "app.json").read_text())
        return cls(release_dir, (release_dir / "VERSION").read_text().strip(), read_build(release_dir),
                   str(conf["host"]), str(conf["address"]), int(conf["port"]))


@dataclass
class HostApp:
    """One host's app inside the multiplexer: running from `release`, or starting (slow build)."""

    release: Release
    server: asyncio.AbstractServer | None = None
    starting: asyncio.Task[None] | None = None
    conns: set[asyncio.StreamWriter] = field(default_factory=set)
    metrics: Metrics = field(default_factory=Metrics)
    served: int = 0  # requests to / (the "errors" build fails every n-th)

    def next_request_fails(self) -> bool:
        build = self.release.build
        if build.name != "errors" or build.error_percent <= 0:
            return False
        self.served += 1
        return self.served % max(1, round(100 / build.error_percent)) == 0

    def stop(self) -> None:
        if self.starting is not None:
            self.starting.cancel()
        if self.server is not None:
            self.server.close()  # the listening socket closes now: new connections are refused
        for writer in list(self.conns):
            writer.transport.abort()
        self.conns.clear()


class Mux:
    """Every host's app, keyed by deploy root (as demo-ctl resolves it with `pwd -P`)."""

    def __init__(self, log: bool) -> None:
        self.apps: dict[str, HostApp] = {}
        self.log = log

    def say(self, text: str) -> None:
        if self.log:
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", flush=True)

    # -- control -------------------------------------------------------------------------------
    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write((await self.answer(line.decode(errors="replace").rstrip("\r\n")) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def answer(self, line: str) -> str:
        verb, *args = line.split("\t")
        try:
            if verb == "start" and len(args) == 2:
                return await self.start(args[0], Path(args[1]))
            if verb == "stop" and args:
                return self.stop(args[0])
            if verb == "status" and args:
                return self.status(args[0])
            if verb == "ping":
                serving = sum(1 for a in self.apps.values() if a.server is not None)
                return f"ok pid {os.getpid()}, {serving} hosts serving"
        except (OSError, ValueError, KeyError) as exc:
            return f"err {verb} {args[0] if args else ''}: {exc}"
        return f"err unknown request {line[:200]!r}"

    async def start(self, root: str, release_dir: Path) -> str:
        app = self.apps.get(root)
        if app is not None:
            return f"ok demo already running (pid {os.getpid()}, release {app.release.version})"
        release = Release.read(release_dir)
        app = HostApp(release)
        if release.build.name == "slow":
            app.starting = asyncio.create_task(self._listen_later(root, app))
        else:
            await self._listen(app)
        self.apps[root] = app
        self.say(f"{release.host} {release.version} ({release.build.name}) started on "
                 f"{release.address}:{release.port}")
        return f"ok demo started (pid {os.getpid()}, release {release.version})"

    async def _listen_later(self, root: str, app: HostApp) -> None:
        await asyncio.sleep(SLOW_START_SECONDS)
        try:
            await self._listen(app)
        except OSError as exc:
            # A per-host app would have died here: so does this host's.
            self.say(f"{app.release.host}: cannot listen: {exc}")
            self.apps.pop(root, None)
        finally:
            app.starting = None

    async def _listen(self, app: HostApp) -> None:
        rel = app.release
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((rel.address, rel.port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen on {rel.address}:{rel.port}: {exc.strerror or exc}") from None
        app.server = await asyncio.start_server(lambda r, w: self.serve(app, r, w), sock=sock)

    def stop(self, root: str) -> str:
        app = self.apps.pop(root, None)
        if app is None:
            return "ok demo not running"
        app.stop()
        self.say(f"{app.release.host} {app.release.version} stopped")
        return f"ok demo stopped (pid {os.getpid()}, release {app.release.version})"

    def status(self, root: str) -> str:
        app = self.apps.get(root)
        if app is None:
            return "off demo not running"
        return f"ok demo running (pid {os.getpid()}, release {app.release.version})"

    # -- HTTP ----------------------------------------------------------------------------------
    async def serve(self, app: HostApp, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        app.conns.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split()
                if len(parts) != 3:
                    return
                method, target, proto = parts
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                length = int(headers.get("content-length", "0") or "0")
                if length:
                    await reader.readexactly(length)
                started = time.monotonic()
                code, body, ctype = await self.route(app, method, target)
                app.metrics.observe(urlsplit(target).path, code, time.monotonic() - started)
                conn = headers.get("connection", "").lower()
                keep = (proto == "HTTP/1.1" and conn != "close") or (proto == "HTTP/1.0" and conn == "keep-alive")
                writer.write(self.response(app.release, code, body, ctype, keep))
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, ValueError):
            return
        finally:
            app.conns.discard(writer)
            writer.close()

    @staticmethod
    async def route(app: HostApp, method: str, target: str) -> tuple[int, str, str]:
        rel, build, url = app.release, app.release.build, urlsplit(target)
        if method != "GET":
            return 501, "not implemented", "text/plain"
        if url.path == "/":
            if build.name == "latency":
                await asyncio.sleep(build.latency_ms / 1000)
            if app.next_request_fails():
                return 500, f"internal error ({build.name} build: {build.error_percent:g}% of requests)", "text/plain"
            return 200, json.dumps({"app": "demo", "version": rel.version, "host": rel.host}), "application/json"
        if url.path == "/metrics":
            return 200, app.metrics.exposition(), "text/plain; version=0.0.4"
        if url.path == "/health":
            if build.name == "broken":
                return 503, "unhealthy: broken build", "text/plain"
            return 200, "ok", "text/plain"
        if url.path == "/version":
            return 200, rel.version, "text/plain"
        if url.path == "/slow":
            seconds = float(parse_qs(url.query).get("seconds", ["1"])[0])
            seconds = max(0.0, min(seconds, 300.0))
            await asyncio.sleep(seconds)
            body = {"app": "demo", "version": rel.version, "host": rel.host, "slept": seconds}
            return 200, json.dumps(body), "application/json"
        return 404, "not found", "text/plain"

    @staticmethod
    def response(rel: Release, code: int, body: str, ctype: str, keep: bool) -> bytes:
        data = (body + "\n").encode()
        head = (f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}\r\n"
                f"Server: demo-mux\r\nDate: {formatdate(usegmt=True)}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                f"X-Demo-Host: {rel.host}\r\nX-Demo-Version: {rel.version}\r\n"
                f"{'' if keep else 'Connection: close' + chr(13) + chr(10)}\r\n")
        return head.encode("latin-1") + data


async def main_async(port: int, ready_file: Path | None, log: bool) -> None:
    mux = Mux(log)
    control = await asyncio.start_server(mux.control, "127.0.0.1", port, limit=MAX_HEAD)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready_file is not None:
        ready_file.write_text(f"{os.getpid()}\n")
    mux.say(f"demo mux pid {os.getpid()} listening for control on 127.0.0.1:{port}")
    await stop.wait()
    control.close()
    for app in mux.apps.values():
        app.stop()
    mux.say("demo mux stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description="serve the demo app of many sandbox hosts")
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--pid-file", type=Path, help="written once the control port listens")
    parser.add_argument("--quiet", action="store_true", help="log only errors")
    args = parser.parse_args()
    asyncio.run(main_async(args.control_port, args.pid_file, not args.quiet))
    sys.exit(0)


if __name__ == "__main__":
    main()
