"""Scale mode: one process (demo_app/mux.py) serving every host's demo app, and its control client.

Hosts find it through <deploy_root>/shared/mux ("127.0.0.1 <port>"), which demo-ctl reads; the
sandbox itself talks to the same control port, pipelining one request per host.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from sandbox.errors import SandboxError
from sandbox.layout import Host, Layout
from sandbox.procs import Tracked, is_listening, wait_until

MUX_SCRIPT = Path(__file__).resolve().parent / "demo_app" / "mux.py"
CONTROL_ADDRESS = "127.0.0.1"


def process(layout: Layout) -> Tracked:
    """The tracked multiplexer process."""
    return Tracked("app mux", layout.mux_pid, "mux.py")


def mux_file(host: Host) -> Path:
    """The file that tells host's demo-ctl to ask the multiplexer (see demo-ctl)."""
    return host.deploy_root / "shared" / "mux"


def start(layout: Layout, port: int, timeout: float = 10.0) -> int:
    """Start the multiplexer with its control port on 127.0.0.1:port; returns its pid once it listens."""
    with open(layout.logs / "mux.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(MUX_SCRIPT), "--control-port", str(port), "--quiet"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
    layout.mux_pid.write_text(f"{proc.pid}\n")

    def listening() -> bool:
        if proc.poll() is not None:
            raise SandboxError(f"app multiplexer exited with {proc.returncode}; see {layout.logs / 'mux.log'}")
        return is_listening(CONTROL_ADDRESS, port)

    wait_until(listening, timeout, f"the app multiplexer's control port 127.0.0.1:{port}")
    return proc.pid


def request_all(port: int, verb: str, hosts: Sequence[Host], timeout: float = 60.0) -> list[tuple[Host, str]]:
    """Send `verb` for every host over one connection; returns (host, answer) for each.

    The deploy root and release are resolved as demo-ctl resolves them (`pwd -P`), so the
    multiplexer sees the same keys whichever side asks.
    """
    lines = []
    for h in hosts:
        root = h.deploy_root.resolve()
        lines.append(f"{verb}\t{root}\t{(root / 'current').resolve()}\n")
    try:
        with socket.create_connection((CONTROL_ADDRESS, port), timeout=timeout) as sock:
            sock.sendall("".join(lines).encode())
            sock.shutdown(socket.SHUT_WR)
            with sock.makefile("r", encoding="utf-8", errors="replace") as answers:
                replies = [answers.readline().rstrip("\n") for _ in hosts]
    except OSError as exc:
        raise SandboxError(f"app multiplexer on {CONTROL_ADDRESS}:{port} unreachable for {verb}: {exc}; "
                           "run `python -m sandbox up`") from exc
    return list(zip(hosts, replies))


def command(port: int, verb: str, hosts: Sequence[Host]) -> None:
    """`verb` (start/stop) for every host; raise naming the hosts the multiplexer refused."""
    failed = [f"{h.name}: {answer or 'no answer'}" for h, answer in request_all(port, verb, hosts)
              if not answer.startswith("ok ")]
    if failed:
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        raise SandboxError(f"app multiplexer: {verb} failed for {'; '.join(failed[:5])}{more}")
