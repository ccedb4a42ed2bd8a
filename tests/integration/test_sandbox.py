"""The sandbox fleet against the real thing: sshd, HAProxy and the demo app on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import paramiko
import pytest
import yaml

from sandbox import Host, Sandbox
from sandbox.artifacts import build_all, extract
from sandbox.sshd import trust
from sandbox.procs import descendants, free_port, is_alive, is_listening
from tests.polling import poll

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def ssh_client(sb: Sandbox, host: Host, known_hosts: Path | None = None) -> paramiko.SSHClient:
    """Connected client with host-key checking on (RejectPolicy) and TCP_NODELAY."""
    client = paramiko.SSHClient()
    trust(client, known_hosts or sb.known_hosts, host)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    sock = socket.create_connection((host.address, host.ssh_port), timeout=5)
    # Without TCP_NODELAY each paramiko command waits ~40 ms on Nagle + delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        client.connect(host.address, host.ssh_port, username=sb.user, key_filename=str(sb.client_key),
                       allow_agent=False, look_for_keys=False, sock=sock, timeout=5)
    except BaseException:
        sock.close()
        client.close()
        raise
    return client


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of a remote command."""
    _, stdout, stderr = client.exec_command(command, timeout=30)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def frontend_hosts(sb: Sandbox, n: int) -> list[str]:
    """Host names answering n requests through the HAProxy frontend (all must be 200)."""
    names = []
    with httpx.Client(base_url=sb.frontend_url, timeout=5) as http:
        for _ in range(n):
            resp = http.get("/")
            assert resp.status_code == 200, resp.text
            names.append(resp.json()["host"])
    return names


# -- SSH ------------------------------------------------------------------------------------


def test_every_host_runs_commands_over_ssh_with_host_key_checking(sandbox: Sandbox) -> None:
    for host in sandbox.hosts:
        client = ssh_client(sandbox, host)
        try:
            status, out, err = run(client, 'echo "$HOME"; id -un')
        finally:
            client.close()
        assert status == 0, err
        home, user = out.split()
        assert home == str(host.home)  # own HOME: the real user's ~/.bashrc is not read
        assert user == sandbox.user


def test_remote_command_latency_is_low(sandbox: Sandbox) -> None:
    client = ssh_client(sandbox, sandbox.hosts[0])
    try:
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            assert run(client, "true")[0] == 0
            timings.append(time.perf_counter() - started)
    finally:
        client.close()
    median = sorted(timings)[len(timings) // 2]
    print(f"trivial remote command over an open connection: median {median * 1000:.1f} ms")
    assert median < 0.1  # ~120 ms or more would mean the login shell runs pyenv init


def test_unknown_host_key_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException):
        ssh_client(sandbox, sandbox.hosts[0], known_hosts=empty)


def test_wrong_host_key_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    host = sandbox.hosts[0]
    # The client's public key is a valid ed25519 key, just not this host's.
    keytype, key = Path(f"{sandbox.client_key}.pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{host.address}]:{host.ssh_port} {keytype} {key}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        ssh_client(sandbox, host, known_hosts=wrong)


def test_demo_ctl_over_ssh_returns_at_once_and_app_outlives_session(fleet: Sandbox) -> None:
    host = fleet.hosts[1]
    ctl = f"{host.deploy_root}/current/bin/demo-ctl"
    old_pid = int((host.deploy_root / "shared" / "demo.pid").read_text())
    client = ssh_client(fleet, host)
    try:
        started = time.monotonic()
        status, out, err = run(client, f"{ctl} restart")
        took = time.monotonic() - started
        assert status == 0, err
        assert took < 5, f"restart over SSH blocked {took:.1f}s"
        assert run(client, f"{ctl} status")[0] == 0
        assert run(client, f"{ctl} start")[1].startswith("demo already running")
    finally:
        client.close()
    new_pid = int((host.deploy_root / "shared" / "demo.pid").read_text())
    assert new_pid != old_pid and not is_alive(old_pid)
    poll(lambda: fleet.served_version(host) == "1.0.0", 10, f"{host.name} to serve again")
    assert is_alive(new_pid)


# -- HAProxy --------------------------------------------------------------------------------


def test_maint_takes_host_out_of_rotation_and_ready_brings_it_back(fleet: Sandbox) -> None:
    assert fleet.haproxy("set server demo/host01 state maint").strip() == ""
    assert fleet.server_states()["host01"] == "MAINT"
    answered: set[str] = set()
    others = {h.name for h in fleet.hosts} - {"host01"}

    def every_other_host_answered() -> bool:
        batch = frontend_hosts(fleet, len(fleet.hosts))
        assert "host01" not in batch, "a server in MAINT still got requests"
        answered.update(batch)
        return answered == others

    poll(every_other_host_answered, 10, "every other host to answer through the frontend")

    assert fleet.haproxy("set server demo/host01 state ready").strip() == ""
    poll(lambda: "host01" in frontend_hosts(fleet, len(fleet.hosts)), 10,
         "host01 to answer through the frontend again")
    # Out of MAINT HAProxy may show "UP 1/2" until its next check confirms the state.
    poll(lambda: fleet.server_states()["host01"] == "UP", 10, "host01 to be UP in HAProxy")


def test_runtime_api_reports_errors_as_text(sandbox: Sandbox) -> None:
    assert "No such server" in sandbox.haproxy("set server demo/nosuchhost state maint")


# -- up / down / reset ---------------------------------------------------------------------


def test_each_host_serves_baseline_with_the_release_layout(fleet: Sandbox) -> None:
    for host in fleet.hosts:
        assert fleet.served_version(host) == "1.0.0"
        root = host.deploy_root
        assert os.readlink(root / "current") == "releases/1.0.0"
        assert sorted(p.name for p in (root / "releases").iterdir()) == ["1.0.0"]
        meta = json.loads((root / "current" / ".tars" / "release.json").read_text())
        assert meta["version"] == "1.0.0" and meta["status"] == "good"
        assert meta["run_id"] == "sandbox-bootstrap"
        sidecar = (fleet.artifacts_dir / "demo-1.0.0.tar.gz.sha256").read_text()
        assert sidecar == f"{meta['sha256']}  demo-1.0.0.tar.gz\n"
        conf = json.loads((root / "current" / "config" / "app.json").read_text())
        assert conf == {"address": host.address, "port": host.app_port, "host": host.name}
    assert set(fleet.server_states().values()) == {"UP"}


def test_inventory_connection_and_env_files(sandbox: Sandbox) -> None:
    inv = yaml.safe_load(sandbox.inventory_path.read_text())
    assert set(inv) == {"vars", "groups", "hosts"}
    assert inv["vars"] == {"artifact_base": sandbox.artifact_base,
                           "haproxy_socket": str(sandbox.haproxy_socket),
                           "haproxy_backend": "demo", "frontend_url": sandbox.frontend_url}
    assert inv["groups"] == {"dc1": {"vars": {"datacenter": "dc1"}}, "dc2": {"vars": {"datacenter": "dc2"}}}
    half = (len(sandbox.hosts) + 1) // 2
    for i, (entry, host) in enumerate(zip(inv["hosts"], sandbox.hosts, strict=True)):
        assert entry == {"name": host.name, "address": host.address, "ssh_port": host.ssh_port,
                         "group": "dc1" if i < half else "dc2",
                         "vars": {"deploy_root": str(host.deploy_root), "app_port": host.app_port}}
    conn = json.loads((sandbox.dir / "connection.json").read_text())
    assert conn == sandbox.connection_json
    assert conn["extra"]["known_hosts"] == str(sandbox.known_hosts)
    env = subprocess.run(["bash", "-c", f". {sandbox.dir / 'env'}; printf %s \"$AIRFLOW_CONN_TARS_SANDBOX\""],
                         capture_output=True, text=True, check=True)
    assert json.loads(env.stdout) == conn


def test_artifact_server_serves_releases(sandbox: Sandbox) -> None:
    with httpx.Client(base_url=sandbox.artifact_base, timeout=5) as http:
        assert http.get("/demo-latest.txt").text.strip() == "2.1.0"
        sums = http.get("/SHA256SUMS").text
        tarball = http.get("/demo-2.1.0.tar.gz")

    assert f"{hashlib.sha256(tarball.content).hexdigest()}  demo-2.1.0.tar.gz" in sums


def test_reset_restores_baseline(fleet: Sandbox) -> None:
    host = fleet.hosts[2]
    root = host.deploy_root
    (root / "releases" / "2.0.0").mkdir()
    (root / "releases" / ".tmp-upload").mkdir()
    (root / "current").unlink()
    (root / "current").symlink_to("releases/2.0.0")
    fleet.haproxy(f"set server demo/{host.name} state drain")
    fleet.reset()
    assert sorted(p.name for p in (root / "releases").iterdir()) == ["1.0.0"]
    assert os.readlink(root / "current") == "releases/1.0.0"
    assert fleet.server_states()[host.name] == "UP"
    assert fleet.served_version(host) == "1.0.0"


def test_up_is_idempotent(sandbox: Sandbox) -> None:
    before = sandbox.pids()
    assert sandbox.up(hosts=len(sandbox.hosts)) == 0.0
    assert sandbox.pids() == before


def test_up_of_20_hosts_takes_under_10s(fresh_sandbox: Callable[..., Sandbox]) -> None:
    sb = fresh_sandbox(20, start=False)
    elapsed = sb.up(hosts=20)
    print(f"up of 20 hosts: {elapsed:.2f}s")
    assert elapsed < 10
    assert len(sb.hosts) == 20
    assert set(sb.server_states().values()) == {"UP"}
    assert {sb.served_version(h) for h in sb.hosts} == {"1.0.0"}


def test_cli_down_leaves_no_process_running(fresh_sandbox: Callable[..., Sandbox]) -> None:
    sb = fresh_sandbox(3)
    pids = {label: pid for label, pid in sb.pids().items()}
    assert all(pids.values()), pids
    session = ssh_client(sb, sb.hosts[0])  # an open session: its sshd child must go too
    try:
        shard_pid = pids["sshd shard 0"]
        assert pids
        children = poll(lambda: descendants(shard_pid), 5, "the per-connection sshd child")
        ports = [(h.address, p) for h in sb.hosts for p in (h.ssh_port, h.app_port)]
        ports += [("127.0.0.1", sb.settings.frontend_port), ("127.0.0.1", sb.settings.artifact_port)]
        assert all(is_listening(a, p) for a, p in ports)

        result = subprocess.run([sys.executable, "-m", "sandbox", "--dir", str(sb.dir), "down"],
                                cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    finally:
        session.close()
    alive = [pid for pid in [*pids.values(), *children] if is_alive(pid)]  # type: ignore[misc]
    assert not alive, f"still running: {alive}"
    listening = [(a, p) for a, p in ports if is_listening(a, p)]
    assert not listening, f"still listening: {listening}"
    assert not sb.is_up()


# -- demo app versions (started directly, no fleet needed) ----------------------------------


@pytest.fixture
def demo_release(tmp_path: Path) -> Iterator[Callable[[str], tuple[Path, int]]]:
    """Factory: install version under a deploy root in tmp_path → (demo-ctl path, port)."""
    artifacts = build_all(tmp_path / "artifacts")
    ctls: list[Path] = []

    def install(version: str) -> tuple[Path, int]:
        root = tmp_path / f"deploy-{version}"
        release = root / "releases" / version
        release.mkdir(parents=True)
        (root / "shared").mkdir()
        extract(artifacts[version].path, release)
        port = free_port()
        (release / "config").mkdir()
        (release / "config" / "app.json").write_text(
            json.dumps({"address": "127.0.0.1", "port": port, "host": "solo"}))
        (root / "current").symlink_to(f"releases/{version}")
        ctl = root / "current" / "bin" / "demo-ctl"
        ctls.append(ctl)
        return ctl, port

    yield install
    for ctl in ctls:
        subprocess.run([str(ctl), "stop"], capture_output=True, timeout=30)


def http_get(port: int, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2)
    except httpx.TransportError:
        return None


def test_release_tarballs_are_deterministic(tmp_path: Path) -> None:
    first, second = build_all(tmp_path / "a"), build_all(tmp_path / "b")
    assert {v: a.sha256 for v, a in first.items()} == {v: a.sha256 for v, a in second.items()}
    assert set(first) == {"1.0.0", "1.1.0", "2.0.0", "2.1.0", "2.0.0-broken", "2.0.0-slow",
                          "2.0.0-errors", "2.0.0-latency"}
    with tarfile.open(first["1.0.0"].path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert {"app.py", "VERSION", "bin/demo-ctl"} <= set(members)
    assert members["bin/demo-ctl"].mode & 0o111
    assert (tmp_path / "a" / "demo-latest.txt").read_text().strip() == "2.1.0"


def test_good_version_serves_endpoints_and_ctl_is_idempotent(demo_release) -> None:  # type: ignore[no-untyped-def]
    ctl, port = demo_release("2.1.0")
    assert subprocess.run([str(ctl), "start"], capture_output=True, timeout=10).returncode == 0
    poll(lambda: (r := http_get(port, "/health")) and r.status_code == 200, 10, "2.1.0 health")
    assert http_get(port, "/").json() == {"app": "demo", "version": "2.1.0", "host": "solo"}  # type: ignore[union-attr]
    assert http_get(port, "/version").text.strip() == "2.1.0"  # type: ignore[union-attr]
    started = time.monotonic()
    assert http_get(port, "/slow?seconds=1").status_code == 200  # type: ignore[union-attr]
    assert time.monotonic() - started >= 1
    pid = (ctl.parents[2] / "shared" / "demo.pid").read_text()
    again = subprocess.run([str(ctl), "start"], capture_output=True, text=True, timeout=10)
    assert "already running" in again.stdout
    assert (ctl.parents[2] / "shared" / "demo.pid").read_text() == pid
    assert subprocess.run([str(ctl), "stop"], capture_output=True, timeout=30).returncode == 0
    assert subprocess.run([str(ctl), "status"], capture_output=True, timeout=10).returncode != 0
    assert not is_listening("127.0.0.1", port)


def test_broken_version_listens_but_is_unhealthy(demo_release) -> None:  # type: ignore[no-untyped-def]
    ctl, port = demo_release("2.0.0-broken")
    subprocess.run([str(ctl), "start"], capture_output=True, timeout=10, check=True)
    health = poll(lambda: http_get(port, "/health"), 10, "2.0.0-broken to listen")
    assert health.status_code == 503  # type: ignore[union-attr]
    assert health.text.strip() == "unhealthy: broken build"  # type: ignore[union-attr]
    assert http_get(port, "/version").text.strip() == "2.0.0-broken"  # type: ignore[union-attr]


def test_slow_version_listens_only_after_about_4s(demo_release) -> None:  # type: ignore[no-untyped-def]
    ctl, port = demo_release("2.0.0-slow")
    started = time.monotonic()
    subprocess.run([str(ctl), "start"], capture_output=True, timeout=10, check=True)
    assert time.monotonic() - started < 2, "start must not wait for the app"
    poll(lambda: (r := http_get(port, "/health")) and r.status_code == 200, 15, "2.0.0-slow health")
    took = time.monotonic() - started
    print(f"2.0.0-slow healthy after {took:.1f}s")
    assert 3.5 <= took < 10
