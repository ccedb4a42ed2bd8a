"""Benchmark: controller CPU per SSH connection as a fleet's known_hosts file grows.

    .venv/bin/python bench/known_hosts.py [--lines 200 2000] [--connections 60] [--dir .sandbox-bench-kh] [--first-address 240]

A real fleet's known_hosts has a line per host (ssh-keyscan's output); paramiko's
``load_host_keys`` compares each line with every entry before it. For each size, a
known_hosts of that many lines (one of them the sandbox host's) and ``--connections``
sequential connections that each run ``true``, three ways:
- Tars: ``HostSession`` (the file parsed once per process, ``hooks/ssh.known_keys``);
- per-connection load: paramiko's ``load_host_keys`` for every connection (Tars before);
- floor: paramiko given the host's key directly (no file at all).
Prints CPU milliseconds per connection (this process: the client side, paramiko's threads
included). Takes the test sandbox lock (``TARS_TEST_LOCK``) so it never overlaps a test session.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

import paramiko  # noqa: E402

from bench.common import locked_sandbox  # noqa: E402
from sandbox import Sandbox  # noqa: E402
from sandbox.layout import Host as SbHost  # noqa: E402
from tars_operators.hooks.ssh import (  # noqa: E402
    HostSession, SessionParams, known_hosts_name, known_keys,
)

CONN_ID = "tars_bench_kh"


def fleet_known_hosts(sb: Sandbox, lines: int, path: Path) -> None:
    """``lines`` lines, one per host as ssh-keyscan writes them; the sandbox host's in the middle."""
    h = sb.hosts[0]
    key = " ".join(sb.known_hosts.read_text().split()[1:3])
    out = [f"[10.{i // 250}.{i % 250}.1]:22 {key}\n" for i in range(lines - 1)]
    out.insert(len(out) // 2, f"{known_hosts_name(h.address, h.ssh_port)} {key}\n")
    path.write_text("".join(out))


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def per_connection(connect: Callable[[], None], n: int) -> float:
    """CPU ms per connection (connect, ``true``, close), over ``n`` sequential connections."""
    started = cpu()
    for _ in range(n):
        connect()
    return (cpu() - started) * 1000 / n


def tars(sb: Sandbox) -> None:
    h = sb.hosts[0]
    params = SessionParams(host=h.name, address=h.address, port=h.ssh_port, conn_id=CONN_ID,
                           connect_timeout=5.0, command_timeout=60.0)
    with HostSession(params) as session:
        session.run("true", step="bench")


def bare(sb: Sandbox, h: SbHost, trust: Callable[[paramiko.SSHClient], None]) -> None:
    client = paramiko.SSHClient()
    trust(client)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    sock = socket.create_connection((h.address, h.ssh_port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.connect(h.address, h.ssh_port, username=sb.user, key_filename=str(sb.client_key),
                   sock=sock, allow_agent=False, look_for_keys=False, timeout=5)
    try:
        _, out, _ = client.exec_command("true", timeout=60)
        if out.channel.recv_exit_status() != 0:
            raise RuntimeError("`true` failed")
    finally:
        client.close()


def measure(sb: Sandbox, lines: int, n: int, work: Path) -> tuple[float, float, float]:
    h = sb.hosts[0]
    path = work / f"known_hosts-{lines}"
    fleet_known_hosts(sb, lines, path)
    conn = sb.connection_json
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
        {**conn, "extra": {**conn["extra"], "known_hosts": str(path)}})
    name = known_hosts_name(h.address, h.ssh_port)
    keys = dict(known_keys(path, name))

    def given(client: paramiko.SSHClient) -> None:
        for keytype, key in keys.items():
            client.get_host_keys().add(name, keytype, key)

    tars(sb)  # warm-up: imports, and the file parsed once (counted below only in its share)
    t = per_connection(lambda: tars(sb), n)
    each = per_connection(lambda: bare(sb, h, lambda c: c.load_host_keys(str(path))), n)
    floor = per_connection(lambda: bare(sb, h, given), n)
    return t, each, floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--connections", type=int, default=60)
    parser.add_argument("--dir", default=str(REPO / ".sandbox-bench-kh"))
    parser.add_argument("--first-address", type=int, default=240)
    args = parser.parse_args()
    with locked_sandbox(args.dir, args.first_address) as sb:
        rows = [(n, *measure(sb, n, args.connections, Path(args.dir))) for n in args.lines]
    print(f"CPU ms per connection + `true` ({args.connections} sequential connections each)")
    print("known_hosts lines   Tars   load per connection   floor (key given)")
    for n, t, each, floor in rows:
        print(f"{n:17d} {t:6.1f} {each:21.1f} {floor:19.1f}")


if __name__ == "__main__":
    main()
