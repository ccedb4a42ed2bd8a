"""HostSession / TarsSSHHook against the sandbox's real sshd: timeouts, host keys, errors, secrets."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from sandbox import Sandbox
from tests.silent import silent
from tars_operators.errors import HostUnreachable, InvalidValue, RemoteCommandError
from tars_operators.hooks.ssh import HostSession, SessionParams

pytestmark = pytest.mark.integration


@pytest.fixture
def params(sandbox: Sandbox) -> SessionParams:
    os.environ["AIRFLOW_CONN_TARS_SANDBOX"] = json.dumps(sandbox.connection_json)
    h = sandbox.hosts[0]
    return SessionParams(host=h.name, address=h.address, port=h.ssh_port, conn_id="tars_sandbox",
                         connect_timeout=3.0, command_timeout=60.0, retries=2)


def with_conn(sandbox: Sandbox, conn_id: str, **extra: object) -> str:
    conn = sandbox.connection_json
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({**conn, "extra": {**conn["extra"], **extra}})
    return conn_id


def test_env_var_connection_and_a_command(params: SessionParams) -> None:
    with HostSession(params) as s:
        result = s.run("echo out; echo err >&2; exit 0", step="t")
        assert (result.exit_code, result.stdout, result.stderr) == (0, "out\n", "err\n")
        s.put_bytes(b"payload", "/tmp/tars-ssh-test-upload", step="t", mode=0o640)
        assert s.run("cat /tmp/tars-ssh-test-upload; rm /tmp/tars-ssh-test-upload", step="t").stdout == "payload"


def test_the_first_command_of_a_connection_does_not_wait_for_a_delayed_ack(
        params: SessionParams) -> None:
    """sshd answers the first channel open behind a message that needs no reply (Nagle); until
    this side acknowledged at once, every connection's first command waited ≥ 40 ms for the
    kernel's delayed ACK (44–53 ms measured here; later commands 3–5 ms). AES-GCM is chosen."""
    firsts, laters = [], []
    for _ in range(7):
        with HostSession(params) as s:
            s.connect()
            started = time.perf_counter()
            s.run("true", step="t")
            firsts.append(time.perf_counter() - started)
            started = time.perf_counter()
            s.run("true", step="t")
            laters.append(time.perf_counter() - started)
            cipher = s.connect().get_transport().remote_cipher  # type: ignore[union-attr]
    assert cipher == "aes128-gcm@openssh.com"
    # The delayed ACK is a kernel timer of at least 40 ms: without the fix no first is faster.
    assert sorted(firsts)[3] < 0.030, f"first commands {firsts}, later ones {laters}"


def test_silent_command_within_its_timeout_succeeds(params: SessionParams) -> None:
    # Silent for twice the connect timeout (3 s): no connect or socket deadline cuts it short.
    with HostSession(params) as s:
        result = s.run("sleep 7; echo done", step="quiet", timeout=60)
    assert result.stdout == "done\n" and 6.5 < result.seconds < 15


def test_command_timeout_is_enforced(params: SessionParams) -> None:
    started = time.monotonic()
    with HostSession(params) as s, pytest.raises(RemoteCommandError, match="timed out after 1s") as err:
        s.run("sleep 30", step="slow", timeout=1)
    assert time.monotonic() - started < 3 and err.value.exit_code is None


def test_failure_names_host_step_exit_code_and_last_stderr_lines(params: SessionParams) -> None:
    with HostSession(params) as s, pytest.raises(RemoteCommandError) as err:
        s.run("for i in $(seq 1 15); do echo line$i >&2; done; exit 3", step="unpack")
    message = str(err.value)
    assert message.startswith(f"{params.host}: unpack: exit code 3")
    assert "line15" in message and "line6" in message and "line5\n" not in message


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (no SSH banner)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    with silent(server):
        yield server.getsockname()[1]


def test_silent_server_fails_within_the_connect_timeout(params: SessionParams, silent_server: int) -> None:
    p = replace(params, host="ghost", address="127.0.0.1", port=silent_server, connect_timeout=2.0)
    started = time.monotonic()
    with HostSession(p) as s, pytest.raises(HostUnreachable) as err:
        s.run("true", step="stage")
    assert time.monotonic() - started < 2.5
    assert str(err.value).startswith("ghost: stage: cannot connect to 127.0.0.1:") and str(silent_server) in str(err.value)


def test_refused_port_fails_fast_naming_the_address(params: SessionParams) -> None:
    p = replace(params, host="nobody", address="127.0.0.250", port=2222)
    started = time.monotonic()
    with HostSession(p) as s, pytest.raises(HostUnreachable, match="nobody: stage: cannot connect to 127.0.0.250:2222"):
        s.run("true", step="stage")
    assert time.monotonic() - started < 3


def test_unknown_host_key_is_refused(sandbox: Sandbox, params: SessionParams, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    p = replace(params, conn_id=with_conn(sandbox, "tars_nokeys", known_hosts=str(empty)))
    with HostSession(p) as s, pytest.raises(HostUnreachable, match="host key not trusted"):
        s.run("true", step="stage")


def test_changed_host_key_is_refused(sandbox: Sandbox, params: SessionParams, tmp_path: Path) -> None:
    other = tmp_path / "known_hosts"
    line = f"[{params.address}]:{params.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPq2GyiGkzsaiMaq2CmOxxGQyNh6TSHBUUeiVYQ9AkCm\n"
    other.write_text(line)
    p = replace(params, conn_id=with_conn(sandbox, "tars_otherkey", known_hosts=str(other)))
    with HostSession(p) as s, pytest.raises(HostUnreachable, match="host key changed"):
        s.run("true", step="stage")


def test_a_fleet_sized_known_hosts_is_parsed_once_and_a_changed_one_again(
        sandbox: Sandbox, params: SessionParams, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # As ssh-keyscan writes it for a real fleet: one line per host, this host's among 2,000.
    import paramiko

    mine = sandbox.known_hosts.read_text().split()
    key = " ".join(mine[1:3])
    lines = [f"[10.{i // 250}.{i % 250}.1]:22 {key}\n" for i in range(1999)]
    lines.insert(1000, f"[{params.address}]:{params.port} {key}\n")
    fleet = tmp_path / "known_hosts"
    fleet.write_text("".join(lines))
    loads = []
    real_load = paramiko.HostKeys.load
    monkeypatch.setattr(paramiko.HostKeys, "load",
                        lambda self, filename: loads.append(filename) or real_load(self, filename))
    p = replace(params, conn_id=with_conn(sandbox, "tars_fleetkeys", known_hosts=str(fleet)))
    assert at_once(8, lambda: echo_ok(p)) == ["ok"] * 8  # a multi-host task's threads
    assert loads == [str(fleet)]  # eight connections at once, one parse
    # The file changes (the host was rebuilt with another key): read again, and refused.
    lines[1000] = (f"[{params.address}]:{params.port} ssh-ed25519 "
                   "AAAAC3NzaC1lZDI1NTE5AAAAIPq2GyiGkzsaiMaq2CmOxxGQyNh6TSHBUUeiVYQ9AkCm\n")
    fleet.write_text("".join(lines))
    with HostSession(p) as s, pytest.raises(HostUnreachable, match="host key changed"):
        s.run("true", step="stage")
    assert len(loads) == 2


def test_the_client_key_is_read_once_until_it_changes_and_the_connection_once_a_session(
        sandbox: Sandbox, params: SessionParams, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import paramiko
    from airflow.sdk import BaseHook

    key = tmp_path / "id_ed25519"
    key.write_bytes(sandbox.client_key.read_bytes())
    key.chmod(0o600)
    reads: list[str] = []
    real_read = paramiko.PKey.from_path
    monkeypatch.setattr(paramiko.PKey, "from_path",
                        staticmethod(lambda path, *a: reads.append(str(path)) or real_read(path, *a)))
    lookups: list[str] = []
    real_lookup = BaseHook.get_connection
    monkeypatch.setattr(BaseHook, "get_connection",
                        classmethod(lambda cls, cid: lookups.append(cid) or real_lookup(cid)))
    p = replace(params, conn_id=with_conn(sandbox, "tars_keyfile", key_file=str(key)))
    assert at_once(6, lambda: echo_ok(p)) == ["ok"] * 6
    assert reads == [str(key)]  # six connections at once, one parse of the key
    assert lookups == ["tars_keyfile"] * 6  # one connection lookup per session, not two
    # The key is replaced by one the hosts do not accept: read again, and refused.
    key.unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with HostSession(p) as s, pytest.raises(HostUnreachable, match="Authentication failed"):
        s.run("true", step="stage")
    assert reads == [str(key)] * 2


def echo_ok(p: SessionParams) -> str:
    with HostSession(p) as s:
        return s.run("echo ok", step="stage").stdout.strip()


def at_once(n: int, work: Callable[[], str]) -> list[str]:
    """``work`` in ``n`` threads released together, as a multi-host task starts its hosts."""
    start = threading.Barrier(n)

    def go() -> str:
        start.wait()
        return work()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: go(), range(n)))


def test_connection_that_turns_host_key_checking_off_is_refused(sandbox: Sandbox, params: SessionParams) -> None:
    p = replace(params, conn_id=with_conn(sandbox, "tars_nocheck", no_host_key_check=True))
    with HostSession(p) as s, pytest.raises(InvalidValue, match="turns host key checking off"):
        s.run("true", step="stage")


def test_secrets_in_templates_reach_the_host_but_not_the_log(
    fleet: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.integration.test_steps import demo_spec  # type: ignore[import-not-found]

    from tars_operators.hooks.ssh import open_session
    from tars_operators.steps.stage import stage_release

    secret = "s3cr3t-Pa55word-xyz"
    os.environ["AIRFLOW_CONN_APP_DB"] = json.dumps({"conn_type": "postgres", "login": "app", "password": secret})
    os.environ["AIRFLOW_VAR_APP_TOKEN"] = "tok-987654321"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "secret.conf.j2").write_text("db={{ conn.app_db.login }}:{{ conn.app_db.password }}\ntoken={{ var.app_token }}\n")
    spec = demo_spec(fleet, tmp_path / "config", install={"templates": [
        {"src": "app.json.j2", "dest": "config/app.json"},
        {"src": "secret.conf.j2", "dest": "config/secret.conf", "mode": "0600"}]})
    from tars_operators.config.schema import Secrets

    spec = replace(spec, config=spec.config.model_copy(
        update={"secrets": Secrets(variables=("app_token",), connections=("app_db",))}))
    host = spec.hosts[0]
    caplog.set_level(logging.DEBUG)
    with open_session(spec, host) as s:
        stage_release(s, spec, host, "1.1.0", None, "r1")
    written = Path(host.vars["deploy_root"]) / "releases/1.1.0/config/secret.conf"
    assert written.read_text() == f"db=app:{secret}\ntoken=tok-987654321\n"
    assert written.stat().st_mode & 0o777 == 0o600
    assert secret not in caplog.text and "tok-987654321" not in caplog.text


def test_commands_keep_their_own_output_exit_code_and_stdin(params: SessionParams) -> None:
    """Every command runs inside the host-side guard; what it prints and returns is its own."""
    script = "set -e\necho \"$(cat)|\"\nprintf 'a\\tb\\n' >&2\ntrap 'echo bye' EXIT\nfalse\necho never"
    with HostSession(params) as s:
        result = s.run(script, step="t", check=False)
        assert (result.exit_code, result.stdout, result.stderr) == (1, "|\nbye\n", "a\tb\n")
        assert s.run("exit 7", step="t", check=False).exit_code == 7
        assert s.run("cat <<'EOF'\n$HOME ')'\nEOF", step="t").stdout == "$HOME ')'\n"
        with pytest.raises(RemoteCommandError, match="t: exit code 3; last lines of stderr:\nboom"):
            s.run("echo boom >&2; exit 3", step="t")


def test_a_command_is_waited_for_without_spinning_whatever_order_its_ends_come_in(
        params: SessionParams) -> None:
    """Output closed long before the exit; exit long before the output closes (a child keeps
    it open); output trickling: each waits on paramiko's events, not in a busy loop."""
    cases = [("exec >/dev/null 2>&1; sleep 1.5; exit 3", 3, "", ""),
             ("(sleep 1.5; echo late) & echo early; exit 4", 4, "early\nlate\n", ""),
             ("for i in 1 2 3; do echo $i; echo e$i >&2; sleep 0.5; done", 0, "1\n2\n3\n",
              "e1\ne2\ne3\n")]
    with HostSession(params) as s:
        s.connect()
        for command, code, out, err in cases:
            cpu, started = time.thread_time(), time.monotonic()
            result = s.run(command, step="t", check=False)
            waited, used = time.monotonic() - started, time.thread_time() - cpu
            assert (result.exit_code, result.stdout, result.stderr) == (code, out, err)
            assert waited >= 1.4 and used < 0.1, f"{command!r}: {used:.3f} CPU-s in {waited:.1f} s"


def test_a_daemon_started_on_purpose_outlives_its_command(params: SessionParams) -> None:
    """A service start (setsid + nohup, like demo-ctl) is not killed when its command ends."""
    import signal
    import subprocess

    marker = f"tars-daemon-{os.getpid()}-{time.monotonic_ns()}"
    with HostSession(params) as s:
        s.run(f"nohup setsid sh -c 'sleep 60; : {marker}' </dev/null >/dev/null 2>&1 & echo started", step="start")
        # The sandbox host is local: look from here (a remote pgrep would also see its own shell).
        survivors = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
        assert survivors, "the daemon was killed with its command"
        for pid in survivors:
            os.kill(int(pid), signal.SIGKILL)
