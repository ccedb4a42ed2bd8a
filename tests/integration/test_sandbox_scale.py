"""The sandbox in scale mode: hundreds of hosts, one sshd per 16 addresses, one app process.

The hosts are real enough for a release: each has its own address across 127.<n>.0.0/16, an
sshd that takes key logins, a deploy root, and an app port served (by one multiplexing process)
with the version its demo-ctl last started; HAProxy balances over all of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from sandbox import Host, Sandbox
from sandbox.artifacts import build_all
from sandbox.fleet import SCALE_ABOVE
from sandbox.procs import descendants, is_alive, listening_sockets
from tests.integration.test_sandbox import run, ssh_client
from tests.polling import poll

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
# 300 hosts: past one /24 (254 addresses), 19 sshd shards. Addresses 127.61.x.y and 127.62.x.y
# are this module's own (small sandboxes live in 127.0.0.0/24).
HOSTS = 300
FIRST, DOWN_FIRST, HUGE_FIRST = 61, 62, 63


def listeners_by_inode() -> dict[int, tuple[str, int]]:
    """Socket inode → (address, port) of every IPv4 TCP listener."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A":
            addr, port = fields[1].split(":")
            found[int(fields[9])] = (".".join(str(b) for b in int(addr, 16).to_bytes(4, sys.byteorder)),
                                     int(port, 16))
    return found


def sockets_of(pid: int) -> set[int]:
    """Inodes of the sockets process pid holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def served(host: Host, path: str = "/") -> httpx.Response | None:
    try:
        return httpx.get(f"{host.app_url}{path}", timeout=3)
    except httpx.TransportError:
        return None


@pytest.fixture(scope="module")
def big(_sandbox_lock: None) -> Iterator[Sandbox]:
    sb = Sandbox(REPO / ".sandbox-scale", first_address=FIRST)
    sb.down()
    try:
        elapsed = sb.up(hosts=HOSTS)
        print(f"\nup of {HOSTS} hosts in scale mode: {elapsed:.2f}s")
        assert elapsed < 30
        yield sb
    finally:
        sb.down()


def test_big_fleet_spreads_over_addresses_and_sshd_shards(big: Sandbox) -> None:
    assert HOSTS > SCALE_ABOVE and big.settings.scale
    addresses = [h.address for h in big.hosts]
    assert len(set(addresses)) == HOSTS
    assert {a.rsplit(".", 1)[0] for a in addresses} == {"127.61.0", "127.61.1"}
    assert not {a for a in addresses if a.endswith((".0", ".255"))}
    configs = sorted((big.dir / "ssh").glob("sshd-*.conf"))
    listen = [sum(line.startswith("ListenAddress ") for line in c.read_text().splitlines()) for c in configs]
    assert len(configs) == 19 and max(listen) == 16 and sum(listen) == HOSTS
    assert all(pid for label, pid in big.pids().items() if label.startswith("sshd"))
    inv = {e["name"]: e["address"] for e in yaml.safe_load(big.inventory_path.read_text())["hosts"]}
    assert inv == {h.name: h.address for h in big.hosts}


def test_every_host_app_is_served_by_one_process_with_its_version(big: Sandbox) -> None:
    apps = {label: pid for label, pid in big.pids().items() if "app" in label and pid}
    assert list(apps) == ["app mux"], apps
    owned = sockets_of(apps["app mux"])
    listeners = {addr: inode for inode, addr in listeners_by_inode().items()}
    not_mux = [h.name for h in big.hosts if listeners.get((h.address, h.app_port)) not in owned]
    assert not not_mux, f"app ports not held by the multiplexer: {not_mux[:5]}"
    for h in (big.hosts[0], big.hosts[253], big.hosts[254], big.hosts[-1]):
        resp = served(h)
        assert resp is not None and resp.status_code == 200
        assert resp.json() == {"app": "demo", "version": "1.0.0", "host": h.name}
        assert resp.headers["X-Demo-Host"] == h.name


def test_haproxy_balances_over_every_host_up(big: Sandbox) -> None:
    states = big.server_states()
    assert len(states) == HOSTS and set(states.values()) == {"UP"}
    answered: dict[str, str] = {}
    with httpx.Client(base_url=big.frontend_url, timeout=5) as http:
        for _ in range(HOSTS):  # round robin: each server once
            resp = http.get("/")
            assert resp.status_code == 200, resp.text
            answered[resp.json()["host"]] = resp.json()["version"]
    assert answered == {h.name: "1.0.0" for h in big.hosts}


def test_every_sampled_host_takes_ssh_logins_with_its_own_home(big: Sandbox) -> None:
    sample = [big.hosts[i] for i in (0, 15, 16, 253, 254, 255, HOSTS - 1)]
    for host in sample:
        client = ssh_client(big, host)
        try:
            status, out, err = run(client, 'echo "$HOME"; id -un')
        finally:
            client.close()
        assert status == 0, err
        assert out.split() == [str(host.home), big.user]


def test_known_hosts_has_a_line_per_host_that_openssh_trusts(big: Sandbox) -> None:
    # As ssh-keyscan writes it for a real fleet (paramiko's side: tests/integration/test_ssh_session).
    lines = big.known_hosts.read_text().splitlines()
    assert len(lines) == HOSTS and lines[-1].startswith(f"[{big.hosts[-1].address}]:")
    host = big.hosts[-1]
    result = subprocess.run(
        ["ssh", "-p", str(host.ssh_port), "-i", str(big.client_key), "-o", "IdentitiesOnly=yes",
         "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={big.known_hosts}",
         "-o", "GlobalKnownHostsFile=/dev/null", f"{big.user}@{host.address}", "echo $HOME"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(host.home)


def test_a_release_restart_on_one_host_changes_only_that_host(big: Sandbox) -> None:
    host, neighbour = big.hosts[254], big.hosts[255]  # same sshd shard, same app process
    root = host.deploy_root
    tarball = build_all(big.artifacts_dir)["2.0.0"].path
    conf = json.dumps({"address": host.address, "port": host.app_port, "host": host.name})
    ctl = f"{root}/current/bin/demo-ctl"
    client = ssh_client(big, host)
    try:
        # What a release does on the host: unpack, render config, switch current, restart.
        status, _, err = run(client, f"set -e; cd {root}; mkdir -p releases/2.0.0; "
                                     f"tar -xzf {tarball} -C releases/2.0.0; mkdir -p releases/2.0.0/config; "
                                     f"echo '{conf}' > releases/2.0.0/config/app.json; "
                                     f"{ctl} stop; ln -sfn releases/2.0.0 current.tmp; mv -T current.tmp current")
        assert status == 0, err
        assert served(host) is None, "a stopped host's app still answers"
        assert run(client, f"{ctl} status")[0] == 3
        poll(lambda: big.server_states()[host.name] == "DOWN", 10, f"{host.name} DOWN in HAProxy")
        status, out, err = run(client, f"{ctl} start")
        assert status == 0 and "release 2.0.0" in out, (out, err)
    finally:
        client.close()
    assert served(host).json()["version"] == "2.0.0"  # type: ignore[union-attr]
    assert served(neighbour).json()["version"] == "1.0.0"  # type: ignore[union-attr]
    poll(lambda: big.server_states()[host.name] == "UP", 10, f"{host.name} UP again in HAProxy")
    versions = {h.name: big.served_version(h) for h in big.hosts}
    assert versions == {h.name: "2.0.0" if h is host else "1.0.0" for h in big.hosts}
    states = big.server_states()
    assert set(states.values()) == {"UP"}, {n: s for n, s in states.items() if s != "UP"}


def test_broken_build_is_unhealthy_on_its_host_only(big: Sandbox) -> None:
    host = big.hosts[-1]
    root = host.deploy_root
    tarball = build_all(big.artifacts_dir)["2.0.0-broken"].path
    conf = json.dumps({"address": host.address, "port": host.app_port, "host": host.name})
    script = (f"set -e; cd {root}; mkdir -p releases/b; tar -xzf {tarball} -C releases/b; mkdir -p releases/b/config; "
              f"echo '{conf}' > releases/b/config/app.json; current/bin/demo-ctl stop; "
              f"ln -sfn releases/b current; current/bin/demo-ctl start")
    subprocess.run(["bash", "-c", script], check=True, capture_output=True, timeout=30)
    health = served(host, "/health")
    assert health is not None and health.status_code == 503
    assert health.text.strip() == "unhealthy: broken build"
    poll(lambda: big.server_states()[host.name] == "DOWN", 10, f"{host.name} DOWN in HAProxy")
    big.reset()
    assert big.served_version(host) == "1.0.0"
    assert set(big.server_states().values()) == {"UP"}
    assert {big.served_version(h) for h in big.hosts} == {"1.0.0"}


def test_down_leaves_no_process_and_no_listener(_sandbox_lock: None) -> None:
    sb = Sandbox(REPO / ".sandbox-scale-down", first_address=DOWN_FIRST, scale=True)
    sb.down()
    try:
        sb.up(hosts=40)
        pids = {label: pid for label, pid in sb.pids().items() if pid}
        assert "app mux" in pids and sum(label.startswith("sshd") for label in pids) == 3
        session = ssh_client(sb, sb.hosts[-1])  # an open session: its sshd child must go too
        try:
            children = poll(lambda: [c for p in pids.values() for c in descendants(p)], 5, "an sshd session child")
            started = time.monotonic()
            result = subprocess.run([sys.executable, "-m", "sandbox", "--dir", str(sb.dir), "down"],
                                    cwd=REPO, capture_output=True, text=True, timeout=60)
            print(f"\ndown of 40 hosts (scale mode, CLI): {time.monotonic() - started:.2f}s")
            assert result.returncode == 0, result.stderr
        finally:
            session.close()
    finally:
        sb.down()
    alive = [pid for pid in [*pids.values(), *children] if is_alive(pid)]
    assert not alive, f"still running: {alive}"
    ports = {sb.settings.frontend_port, sb.settings.artifact_port, sb.settings.mux_port}
    left = [(a, p) for a, p in listening_sockets() if a.startswith(f"127.{DOWN_FIRST}.")
            or (a == "127.0.0.1" and p in ports)]
    assert not left, f"still listening: {left}"
    assert not sb.is_up()


def test_cli_up_of_2000_hosts_within_60s_and_down(_sandbox_lock: None) -> None:
    sb_dir = REPO / ".sandbox-scale-2000"
    cli = [sys.executable, "-m", "sandbox", "--dir", str(sb_dir)]
    subprocess.run([*cli, "down"], cwd=REPO, capture_output=True, timeout=60)
    try:
        started = time.monotonic()
        result = subprocess.run([*cli, "up", "--hosts", "2000", "--first-address", str(HUGE_FIRST)],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started
        print(f"\n`python -m sandbox up --hosts 2000`: {took:.1f}s ({result.stdout.splitlines()[:1]})")
        assert result.returncode == 0, result.stderr
        assert took <= 60
        sb = Sandbox.load(sb_dir)
        states = sb.server_states()
        assert len(states) == 2000 and set(states.values()) == {"UP"}
        assert len(list((sb_dir / "ssh").glob("sshd-*.conf"))) == 125
        for h in sb.hosts[::199]:
            assert sb.served_version(h) == "1.0.0"
        started = time.monotonic()
        result = subprocess.run([*cli, "down"], cwd=REPO, capture_output=True, text=True, timeout=60)
        print(f"`python -m sandbox down` of 2000 hosts: {time.monotonic() - started:.1f}s")
        assert result.returncode == 0, result.stderr
        left = [(a, p) for a, p in listening_sockets() if a.startswith(f"127.{HUGE_FIRST}.")]
        assert not left, f"still listening: {left[:5]}"
        assert not sb.is_up() and not any(sb.pids().values())
    finally:
        subprocess.run([*cli, "down"], cwd=REPO, capture_output=True, timeout=60)
