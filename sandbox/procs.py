"""Processes the sandbox starts: pid files, liveness that ignores zombies, safe kill."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import PortInUseError, SandboxError


@dataclass(frozen=True)
class Tracked:
    """A process recorded in a pid file, identified by a token its cmdline must contain."""

    label: str
    pid_file: Path
    cmdline_token: str

    def pid(self) -> int | None:
        """The live pid recorded in the pid file, or None (missing, stale, zombie, reused)."""
        pid = read_pid(self.pid_file)
        if pid is None or not is_alive(pid) or self.cmdline_token not in cmdline(pid):
            return None
        return pid


def read_pid(path: Path) -> int | None:
    """Pid from a pid file, None if it is missing or garbled."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def proc_state(pid: int) -> str | None:
    """State letter from /proc/<pid>/stat, None if the process does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    return stat.rsplit(")", 1)[1].split()[0]


def parent_pid(pid: int) -> int | None:
    """Parent pid from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def is_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (zombies linger here; kill -0 lies)."""
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def cmdline(pid: int) -> str:
    """The process command line joined by spaces, '' if unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def descendants(pid: int) -> list[int]:
    """All live descendants of pid (e.g. the per-connection children of an sshd listener)."""
    return descendants_of([pid]).get(pid, [])


def descendants_of(pids: Iterable[int]) -> dict[int, list[int]]:
    """pid → its live descendants, for many pids from one walk of /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            ppid = parent_pid(int(entry.name))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry.name))
    result: dict[int, list[int]] = {}
    for pid in pids:
        found: list[int] = []
        todo = [pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        result[pid] = [p for p in found if is_alive(p)]
    return result


def terminate(pids: Iterable[int], timeout: float = 10.0) -> list[int]:
    """TERM the pids, wait until gone (or zombie), KILL leftovers; returns pids that survived."""
    pending = [p for p in pids if is_alive(p)]
    for pid in pending:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        time.sleep(0.02)
        pending = [p for p in pending if is_alive(p)]
    for pid in pending:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while pending and time.monotonic() < deadline:
        time.sleep(0.02)
        pending = [p for p in pending if is_alive(p)]
    return pending


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def port_is_free(address: str, port: int) -> bool:
    """True if a listener could bind address:port (same SO_REUSEADDR servers use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def require_free(addresses: Iterable[str], port: int, what: str) -> None:
    """Raise PortInUseError naming the first address where port is taken."""
    for address in addresses:
        if not port_is_free(address, port):
            raise PortInUseError(address, port, what)


def free_port(address: str = "127.0.0.1") -> int:
    """An ephemeral port that is free right now on address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def is_listening(address: str, port: int, timeout: float = 0.2) -> bool:
    """True if something accepts TCP connections on address:port."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def listening_sockets() -> set[tuple[str, int]]:
    """(address, port) of every IPv4 TCP listener, read from /proc/net/tcp.

    Unlike is_listening this opens no connection: probing 2,000 sshd addresses by connecting
    would make each sshd fork a session child per probe.
    """
    found: set[tuple[str, int]] = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                addr_hex, port_hex = fields[1].split(":")
                address = socket.inet_ntoa(int(addr_hex, 16).to_bytes(4, sys.byteorder))
                found.add((address, int(port_hex, 16)))
    return found


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll check() until it is true; raise SandboxError naming what after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise SandboxError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
