"""Benchmark: preflight of N hosts (the demo's ``runtime.requires``), wall seconds, beside a floor.

    .venv/bin/python bench/preflight.py [--hosts 30] [--rounds 5] [--dir .sandbox-bench-preflight] [--first-address 190]

Preflight is what every release does in ``prepare``: one SSH session per host, all in
parallel, one command checking every requirement. The floor, measured in the same run: one
bare paramiko connection + ``true`` to every host, in parallel, the same way. Prints the
median round of each and their ratio. Takes the test sandbox lock (``TARS_TEST_LOCK``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

import paramiko  # noqa: E402

from bench.common import locked_sandbox  # noqa: E402
from sandbox import Sandbox  # noqa: E402
from sandbox.sshd import trust  # noqa: E402



def bare_round(sb: Sandbox) -> float:
    """Wall seconds: a fresh bare SSH connection + ``true`` to every host, in parallel."""
    def one(h: object) -> None:
        client = paramiko.SSHClient()
        trust(client, sb.known_hosts, h)  # type: ignore[arg-type]
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        sock = socket.create_connection((h.address, h.ssh_port), timeout=10)  # type: ignore[attr-defined]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.connect(h.address, h.ssh_port, username=sb.user,  # type: ignore[attr-defined]
                       key_filename=str(sb.client_key), sock=sock, allow_agent=False,
                       look_for_keys=False, timeout=10)
        try:
            _, out, _ = client.exec_command("true", timeout=30)
            out.read()
            if out.channel.recv_exit_status() != 0:
                raise RuntimeError("`true` failed")
        finally:
            client.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(sb.hosts)) as pool:
        list(pool.map(one, sb.hosts))
    return time.perf_counter() - started


def preflight_round(spec: object) -> tuple[float, int]:
    """Wall seconds of ``check_hosts`` over every host; and how many came back ready."""
    from tars_operators.assembly.preflight import check_hosts

    names = [h.name for h in spec.hosts]  # type: ignore[attr-defined]
    started = time.perf_counter()
    found = check_hosts(spec, names)  # type: ignore[arg-type]
    took = time.perf_counter() - started
    errors = [r.error for r in found.values() if r.error]
    if errors:
        raise RuntimeError(f"hosts not checked: {errors[:3]}")
    return took, sum(r.ready for r in found.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=str(REPO / ".sandbox-bench-preflight"))
    parser.add_argument("--first-address", type=int, default=190)
    args = parser.parse_args()
    logging.disable(logging.INFO)  # a line per connection and command otherwise
    with locked_sandbox(args.dir, args.first_address, hosts=args.hosts) as sb:
        os.environ["AIRFLOW_CONN_TARS_SANDBOX"] = json.dumps(sb.connection_json)
        os.environ["TARS_INVENTORY"] = str(sb.inventory_path)
        from tars_operators.config.loader import load_app

        spec = load_app(REPO / "configs" / "apps" / "demo.yaml",
                        defaults_path=REPO / "configs" / "defaults.yaml")
        checks = len(spec.config.runtime.requires)
        preflight_round(spec)  # warm-up: imports, connection lookup
        bare, pre, ready = [], [], 0
        for _ in range(args.rounds):
            bare.append(bare_round(sb))
            took, ready = preflight_round(spec)
            pre.append(took)
    b, p = statistics.median(bare), statistics.median(pre)
    print(f"hosts: {args.hosts}; requirements per host: {checks}; ready: {ready}/{args.hosts}")
    print(f"preflight: {p:.2f} s wall (rounds: {', '.join(f'{x:.2f}' for x in pre)})")
    print(f"floor (bare ssh connect + true, in parallel): {b:.2f} s wall "
          f"(rounds: {', '.join(f'{x:.2f}' for x in bare)})")
    print(f"ratio: {p / b:.2f}x; budget 2 s: {'within' if p <= 2.0 else 'OVER'}")


if __name__ == "__main__":
    main()
