"""HAProxy in front of the demo apps: config, process, and the runtime API over its unix socket."""

from __future__ import annotations

import csv
import io
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from sandbox.errors import SandboxError
from sandbox.layout import Host, Layout
from sandbox.procs import Tracked

HAPROXY = "/usr/sbin/haproxy"
BACKEND = "demo"
SESSIONS_FIELD = 4  # `scur` (field 5): current sessions
STATUS_FIELD = 17  # 0-based index of `status` (field 18) in `show stat` CSV
CHECK_STATUS_FIELD = 36  # `check_status` (field 37), e.g. L7OK
# Scale mode: health checks per second across the whole backend, and runtime API clients at once
# (a release of thousands of hosts polls server states from many threads).
SCALE_CHECKS_PER_SECOND = 1000
SCALE_STATS_MAXCONN = 1000
READY_BATCH = 100  # servers put back in rotation per runtime API round trip
PIN_HEADER = "x-sandbox-server"  # a request with it goes to the server it names (not in scale mode)


def check_options(n_hosts: int, scale: bool) -> str:
    """Health-check options of every server.

    A small fleet is checked every 300 ms. A big one would spend two cores on checks at that
    pace (2,000 servers → 6,600 checks/s), so the steady interval grows with the fleet to keep
    at most SCALE_CHECKS_PER_SECOND in total, while a server changing state (fastinter) or down
    (downinter) is still checked quickly: a restarted host is back UP within a second or so.
    Measured here with 2,000 servers: 1,000 checks/s cost the app process 11% of a core and
    HAProxy 5%.
    """
    if not scale:
        return "check inter 300ms fall 2 rise 2"
    inter = max(300, min(10_000, round(n_hosts * 1000 / SCALE_CHECKS_PER_SECOND)))
    return f"check inter {inter}ms fastinter 300ms downinter 500ms fall 2 rise 2"


def render_config(layout: Layout, hosts: Sequence[Host], frontend_port: int, scale: bool = False) -> str:
    """haproxy.cfg: one loopback frontend, backend `demo` with every host health-checked."""
    checks = check_options(len(hosts), scale)
    servers = "\n".join(f"    server {h.name} {h.address}:{h.app_port} {checks}" for h in hosts)
    if not scale:  # a test can send a request to one server (a drain then has a session to wait for)
        servers = "\n".join(f"    use-server {h.name} if {{ req.hdr({PIN_HEADER}) -m str {h.name} }}"
                             for h in hosts) + "\n" + servers
    return f"""\
# written by `python -m sandbox up`; do not edit
global
    stats socket {layout.haproxy_socket} mode 600 level admin
    stats maxconn {SCALE_STATS_MAXCONN if scale else 100}
    stats timeout 30s

defaults
    mode http
    option httplog
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 2s
    # No retries and no redispatch: a request sent to a server being restarted must fail
    # visibly, so tests prove drains are right instead of HAProxy hiding errors.
    retries 0

frontend fe_demo
    bind 127.0.0.1:{frontend_port}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    option httpchk GET /health
{servers}
"""


def process(layout: Layout) -> Tracked:
    """The tracked haproxy process."""
    return Tracked("haproxy", layout.haproxy_pid, "haproxy")


def start(layout: Layout, hosts: Sequence[Host], frontend_port: int, scale: bool = False) -> None:
    """Write haproxy.cfg, validate it and start haproxy daemonised with a pid file."""
    if len(str(layout.haproxy_socket)) > 107:
        raise SandboxError(
            f"{layout.haproxy_socket} is too long for a unix socket (max 107 bytes); use a shorter --dir"
        )
    layout.haproxy_cfg.write_text(render_config(layout, hosts, frontend_port, scale))
    cfg = str(layout.haproxy_cfg)
    check = subprocess.run([HAPROXY, "-c", "-q", "-f", cfg], capture_output=True, text=True)
    if check.returncode != 0:
        raise SandboxError(f"haproxy rejects {cfg}: {check.stderr.strip()}")
    run = subprocess.run(
        [HAPROXY, "-f", cfg, "-D", "-p", str(layout.haproxy_pid)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, start_new_session=True,
    )
    if run.returncode != 0:
        raise SandboxError(f"haproxy failed to start with {cfg}: {run.stderr.strip()}")


def command(sock_path: Path, cmd: str, timeout: float = 5.0) -> str:
    """Send one runtime API command and return the answer; retries while the socket is busy."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(str(sock_path))
                sock.sendall(cmd.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            return b"".join(chunks).decode()
        except (BlockingIOError, ConnectionRefusedError, FileNotFoundError) as exc:
            # EAGAIN when all `stats maxconn` slots are busy; refused/missing while starting.
            if time.monotonic() > deadline:
                raise SandboxError(f"haproxy runtime API at {sock_path} unavailable for {cmd!r}: {exc}") from exc
            time.sleep(0.02)


def stat_rows(sock_path: Path) -> list[list[str]]:
    """`show stat` rows of the demo backend's servers (no FRONTEND/BACKEND lines)."""
    answer = command(sock_path, "show stat")
    rows = [r for r in csv.reader(io.StringIO(answer.lstrip("# "))) if len(r) > CHECK_STATUS_FIELD]
    return [r for r in rows[1:] if r[0] == BACKEND and r[1] not in ("FRONTEND", "BACKEND")]


def server_states(sock_path: Path) -> dict[str, str]:
    """Server name → status (UP, DOWN, DRAIN, MAINT, …) from `show stat` field 18."""
    return {r[1]: r[STATUS_FIELD] for r in stat_rows(sock_path)}


def sessions(sock_path: Path) -> dict[str, int]:
    """Server name → current sessions (`scur`, field 5)."""
    return {r[1]: int(r[SESSIONS_FIELD] or 0) for r in stat_rows(sock_path)}


def all_up_and_checked(sock_path: Path, names: Sequence[str]) -> bool:
    """True if every named server is UP after a passing health check (not just initially UP)."""
    rows = {r[1]: r for r in stat_rows(sock_path)}
    return all(
        n in rows and rows[n][STATUS_FIELD] == "UP" and rows[n][CHECK_STATUS_FIELD] == "L7OK"
        for n in names
    )


def set_ready(sock_path: Path, names: Sequence[str]) -> None:
    """Put servers back in rotation: state ready, initial weight, health checks enabled."""
    for i in range(0, len(names), READY_BATCH):
        # Several commands per connection (`;`-separated): thousands of servers in a few round trips.
        batch = [cmd for name in names[i:i + READY_BATCH] for cmd in _ready_commands(name)]
        answer = command(sock_path, "; ".join(batch)).strip()
        if answer:
            first = batch[0] if len(batch) == 3 else f"{batch[0]} … ({len(batch)} commands)"
            raise SandboxError(f"haproxy {first!r} failed: {answer}")


def _ready_commands(name: str) -> tuple[str, str, str]:
    return (f"set server {BACKEND}/{name} state ready",
            f"set weight {BACKEND}/{name} 100%",
            f"enable health {BACKEND}/{name}")
