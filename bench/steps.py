"""Benchmark: stage + activate + health on 10 sandbox hosts, Tars steps vs bare paramiko.

    .venv/bin/python bench/steps.py [--hosts 10] [--rounds 3] [--dir .sandbox-bench] [--first-address 230]

Both sides run one thread per host (as the release runs a stage's hosts) and do the same
work: upload the tarball, unpack into a temp dir, install config/app.json, rename into
releases/, stop, switch ``current``, start, wait for two consecutive 200s on /health. The bare
paramiko side is the floor: no validation, no metadata, no idempotency checks, no archive
checks. Prints seconds per host (wall / hosts) and per host-run (mean latency), and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

import httpx  # noqa: E402
import paramiko  # noqa: E402

from sandbox import Sandbox  # noqa: E402
from sandbox.sshd import trust  # noqa: E402
from sandbox.layout import Host as SbHost  # noqa: E402
from tars_operators.config.schema import AppConfig  # noqa: E402
from tars_operators.config.spec import AppSpec, Host  # noqa: E402

VERSION = "2.0.0"
APP_JSON = '{"address": "{{ host.address }}", "port": {{ vars.app_port }}, "host": "{{ host.name }}"}\n'


def demo_spec(sb: Sandbox, config_dir: Path) -> AppSpec:
    (config_dir / "app.json.j2").write_text(APP_JSON)
    ctl = "{{ deploy_root }}/current/bin/demo-ctl"
    raw = {
        "app": {"name": "demo", "owner": "bench"},
        "artifact": {"url": "{{ vars.artifact_base }}/demo-{{ version }}.tar.gz", "checksum": {"url": "{{ url }}.sha256"}},
        "hosts": {}, "ssh": {"conn_id": "tars_sandbox", "connect_timeout": 5, "command_timeout": 60},
        "install": {"deploy_root": "{{ vars.deploy_root }}", "templates": [{"src": "app.json.j2", "dest": "config/app.json"}]},
        "service": {"start": f"{ctl} start", "stop": f"{ctl} stop", "status": f"{ctl} status"},
        "health": [{"kind": "http", "url": "http://{{ host.address }}:{{ vars.app_port }}/health",
                    "interval": 0.05, "timeout": 30, "successes": 2}],
    }
    hosts = tuple(Host(h.name, h.address, h.ssh_port, h.group,
                       MappingProxyType({"deploy_root": str(h.deploy_root), "app_port": h.app_port})) for h in sb.hosts)
    os.environ["AIRFLOW_CONN_TARS_SANDBOX"] = json.dumps(sb.connection_json)
    return AppSpec(AppConfig.model_validate(raw), hosts, config_dir / "demo.yaml",
                   MappingProxyType({"artifact_base": sb.artifact_base}))


def tars_round(sb: Sandbox, spec: AppSpec, cache: Path) -> list[float]:
    from tars_operators.hooks.artifacts import fetch_artifact
    from tars_operators.hooks.ssh import open_session
    from tars_operators.steps.activate import activate_release
    from tars_operators.steps.checks import run_checks
    from tars_operators.steps.stage import stage_release

    art = fetch_artifact(spec, VERSION, cache_dir=cache)

    def one(host: Host) -> float:
        started = time.monotonic()
        with open_session(spec, host) as s:
            stage_release(s, spec, host, VERSION, art, "bench")
            activate_release(s, spec, host, VERSION, "bench")
            run_checks(s, spec, host, VERSION)
        return time.monotonic() - started

    return _pool(one, list(spec.hosts))


def paramiko_round(sb: Sandbox, tarball: Path) -> list[float]:
    def one(h: SbHost) -> float:
        started = time.monotonic()
        client = _connect(sb, h)
        root, q = str(h.deploy_root), shlex.quote
        tmp = f"{root}/releases/.tmp-{VERSION}-bench"
        sftp = client.open_sftp()
        _run(client, f"mkdir -p {q(root)}/.tars-tmp")
        sftp.put(str(tarball), f"{root}/.tars-tmp/b.tar.gz")
        config = json.dumps({"address": h.address, "port": h.app_port, "host": h.name})
        sftp.putfo(_bytes(config), f"{root}/.tars-tmp/app.json")
        _run(client, f"set -e; cd {q(root)}; mkdir {q(tmp)}; tar -xzf .tars-tmp/b.tar.gz --no-same-owner -C {q(tmp)}; "
                     f"mkdir -p {q(tmp)}/config; mv .tars-tmp/app.json {q(tmp)}/config/app.json; "
                     f"mv -T {q(tmp)} releases/{VERSION}; rm -f .tars-tmp/b.tar.gz")
        _run(client, f"set -e; cd {q(root)}; current/bin/demo-ctl stop; ln -sfn releases/{VERSION} current.tmp; "
                     f"mv -T current.tmp current; current/bin/demo-ctl start")
        _wait_healthy(f"http://{h.address}:{h.app_port}/health")
        sftp.close()
        client.close()
        return time.monotonic() - started

    return _pool(one, sb.hosts)


def _connect(sb: Sandbox, h: SbHost) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    trust(client, sb.known_hosts, h)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    sock = socket.create_connection((h.address, h.ssh_port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.connect(h.address, h.ssh_port, username=sb.user, key_filename=str(sb.client_key), sock=sock,
                   allow_agent=False, look_for_keys=False, timeout=5)
    return client


def _run(client: paramiko.SSHClient, command: str) -> None:
    _, out, err = client.exec_command(command, timeout=60)
    out.read()
    if out.channel.recv_exit_status() != 0:
        raise RuntimeError(err.read().decode())


def _bytes(text: str) -> Any:
    import io

    return io.BytesIO(text.encode())


def _wait_healthy(url: str, successes: int = 2, timeout: float = 30.0) -> None:
    deadline, streak = time.monotonic() + timeout, 0
    with httpx.Client() as http:
        while streak < successes:
            try:
                streak = streak + 1 if http.get(url, timeout=2).status_code == 200 else 0
            except httpx.HTTPError:
                streak = 0
            if streak < successes:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} not healthy")
                time.sleep(0.05)


def _pool(fn: Callable[[Any], float], items: list[Any]) -> list[float]:
    started = time.monotonic()
    with ThreadPoolExecutor(len(items)) as pool:
        per_host = list(pool.map(fn, items))
    return [time.monotonic() - started, *per_host]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=str(REPO / ".sandbox-bench"))
    parser.add_argument("--first-address", type=int, default=230)
    args = parser.parse_args()
    sb = Sandbox(args.dir, first_address=args.first_address)
    owned = not sb.is_up()
    if owned:
        print(f"starting a {args.hosts}-host sandbox in {args.dir} …", flush=True)
        sb.up(hosts=args.hosts)
    try:
        _measure(sb, args.rounds)
    finally:
        if owned:
            sb.down()


def _measure(sb: Sandbox, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spec = demo_spec(sb, Path(tmp))
        tarball = sb.artifacts_dir / f"demo-{VERSION}.tar.gz"
        results: dict[str, list[list[float]]] = {"tars": [], "paramiko": []}
        for _ in range(rounds):
            for name, run in (("tars", lambda: tars_round(sb, spec, Path(tmp) / "cache")),
                              ("paramiko", lambda: paramiko_round(sb, tarball))):
                sb.reset()
                results[name].append(run())
    n = len(sb.hosts)
    walls = {k: statistics.median(r[0] for r in v) for k, v in results.items()}
    lat = {k: statistics.median(x for r in v for x in r[1:]) for k, v in results.items()}
    print(f"\nstage + activate + health, {n} hosts in parallel, median of {rounds} rounds:")
    for name in ("tars", "paramiko"):
        print(f"  {name:9s} wall {walls[name]:6.2f}s  = {walls[name] / n:5.3f}s per host   "
              f"per-host latency median {lat[name]:5.3f}s")
    print(f"  ratio tars / bare paramiko: wall {walls['tars'] / walls['paramiko']:.2f}×, "
          f"latency {lat['tars'] / lat['paramiko']:.2f}×")


if __name__ == "__main__":
    main()
