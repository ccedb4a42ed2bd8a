"""Benchmark: milliseconds per trivial remote command, ``HostSession.run`` vs bare paramiko.

    .venv/bin/python bench/ssh_command.py [--commands 300] [--rounds 5] [--dir .sandbox-bench-ssh] [--first-address 240]

One sandbox host, one SSH connection per side, ``true`` run ``--commands`` times per round,
sequentially. ``HostSession.run`` wraps every command in the host-side guard (own process
group, deadline, killed when the controller goes away); the bare side sends ``true`` as is and
is the floor. Prints the median round's ms per command for each side and the difference.
Then what one writer per host costs a release per host: the lease taken, three phases
recorded, given back (5 commands), beside 5 bare ``true`` commands.
Takes the test sandbox lock (``TARS_TEST_LOCK``) so it never overlaps a test session's fleets.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

import paramiko  # noqa: E402

from bench.common import locked_sandbox  # noqa: E402
from sandbox import Sandbox  # noqa: E402
from sandbox.sshd import trust  # noqa: E402
from tars_operators.hooks.ssh import HostSession, SessionParams  # noqa: E402



def tars_side(sb: Sandbox, commands: int) -> float:
    h = sb.hosts[0]
    params = SessionParams(host=h.name, address=h.address, port=h.ssh_port, conn_id="tars_bench_ssh",
                           connect_timeout=5.0, command_timeout=60.0)
    with HostSession(params) as session:
        session.run("true", step="warm-up")
        started = time.perf_counter()
        for _ in range(commands):
            session.run("true", step="bench")
        return (time.perf_counter() - started) * 1000 / commands


def bare_side(sb: Sandbox, commands: int) -> float:
    h = sb.hosts[0]
    client = paramiko.SSHClient()
    trust(client, sb.known_hosts, h)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    sock = socket.create_connection((h.address, h.ssh_port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.connect(h.address, h.ssh_port, username=sb.user, key_filename=str(sb.client_key), sock=sock,
                   allow_agent=False, look_for_keys=False, timeout=5)
    try:
        started = time.perf_counter()
        for _ in range(commands):
            _, out, _ = client.exec_command("true", timeout=60)
            out.read()
            if out.channel.recv_exit_status() != 0:
                raise RuntimeError("`true` failed")
        return (time.perf_counter() - started) * 1000 / commands
    finally:
        client.close()


def lease_side(sb: Sandbox, hosts: int) -> float:
    """ms per host for the lease cycle a release does: acquire, 3 phases, release."""
    from tars_operators.remote.layout import ReleaseLayout
    from tars_operators.steps.lease import Holder, acquire, release, set_phase

    h = sb.hosts[0]
    params = SessionParams(host=h.name, address=h.address, port=h.ssh_port, conn_id="tars_bench_ssh",
                           connect_timeout=5.0, command_timeout=60.0)
    layout = ReleaseLayout(str(h.deploy_root))
    with HostSession(params) as session:
        session.run("true", step="warm-up")
        started = time.perf_counter()
        for i in range(hosts):
            holder = Holder("tars_deploy__bench", f"run{i}")
            acquire(session, layout, holder, phase="staging", version="2.0.0",
                    is_active=lambda _: True, wait=0)
            for phase in ("activating", "checking", "in rotation"):
                set_phase(session, layout, holder, phase, "2.0.0")  # type: ignore[arg-type]
            release(session, layout, holder)
        return (time.perf_counter() - started) * 1000 / hosts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=str(REPO / ".sandbox-bench-ssh"))
    parser.add_argument("--first-address", type=int, default=240)
    args = parser.parse_args()
    with locked_sandbox(args.dir, args.first_address) as sb:
        os.environ["AIRFLOW_CONN_TARS_BENCH_SSH"] = json.dumps(sb.connection_json)
        tars = [tars_side(sb, args.commands) for _ in range(args.rounds)]
        bare = [bare_side(sb, args.commands) for _ in range(args.rounds)]
        leases = [lease_side(sb, args.commands // 5) for _ in range(args.rounds)]
    t, b = statistics.median(tars), statistics.median(bare)
    print(f"HostSession.run: {t:.2f} ms/command (rounds: {', '.join(f'{x:.2f}' for x in tars)})")
    print(f"bare paramiko:   {b:.2f} ms/command (rounds: {', '.join(f'{x:.2f}' for x in bare)})")
    print(f"overhead:        {t - b:+.2f} ms/command ({t / b:.2f}x)")
    lz = statistics.median(leases)
    print(f"lease per host (acquire, 3 phases, release): {lz:.2f} ms; floor 5 x bare true: "
          f"{5 * b:.2f} ms (rounds: {', '.join(f'{x:.2f}' for x in leases)})")


if __name__ == "__main__":
    main()
