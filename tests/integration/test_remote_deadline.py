"""Remote work never outlives its step, on the sandbox's real sshd.

A command that times out, whose connection is cut or whose worker is killed -9 leaves no
process on the host; a command that ends normally keeps what it daemonised on purpose; command
checks get their own timeout per attempt. The sandbox hosts are local processes, so what runs
"on the host" is read from /proc: every process of the command's session (sshd makes the
command's shell a session leader), zombies excepted.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from sandbox import Sandbox
from tars_operators.config.schema import CommandCheck
from tars_operators.errors import HostUnreachable, RemoteCommandTimeout
from tars_operators.hooks.ssh import HostSession, SessionParams, open_session
from tars_operators.remote.watchdog import guarded
from tars_operators.steps.checks import run_checks
from tars_operators.triggers.health import HealthCheckTrigger
from tests.polling import poll  # type: ignore[import-not-found]

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def params(sandbox: Sandbox) -> SessionParams:
    os.environ["AIRFLOW_CONN_TARS_SANDBOX"] = json.dumps(sandbox.connection_json)
    h = sandbox.hosts[1]
    return SessionParams(host=h.name, address=h.address, port=h.ssh_port, conn_id="tars_sandbox",
                         connect_timeout=3.0, command_timeout=60.0, retries=2)


def _stat(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # state, ppid, pgrp, session, ...


def alive_in_session(sid: int) -> list[int]:
    """Every non-zombie process of session ``sid``."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        fields = _stat(pid)
        if fields and int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(pid))
    return found


def command_session(marker: str) -> int | None:
    """The session of the remote shell running the command marked ``marker`` (None: not yet)."""
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    for pid in out:
        fields = _stat(pid)
        if fields and int(fields[3]) == int(pid):  # the session leader: sshd's child shell
            return int(pid)
    return None


def busy_command(marker: str) -> str:
    """Sleeps for 300 s in the foreground and in a background child (two extra processes)."""
    return f"sh -c 'sleep 300; : {marker}-child' & sh -c 'sleep 300; : {marker}-main'; echo never"


def assert_all_gone(sid: int, within: float, what: str) -> None:
    poll(lambda: not alive_in_session(sid), within, f"every process of {what} to be killed "
         f"(left: {alive_in_session(sid)})")


def test_timed_out_step_fails_and_leaves_no_process(params: SessionParams) -> None:
    marker = f"tars-deadline-{secrets.token_hex(4)}"
    raised: list[BaseException] = []

    def step() -> None:
        with HostSession(params) as s:
            try:
                s.run(busy_command(marker), step="activate", timeout=2)
            except BaseException as exc:  # noqa: BLE001 — handed to the test thread
                raised.append(exc)

    worker = threading.Thread(target=step)
    worker.start()
    sid = poll(lambda: command_session(marker), 5, "the command to start on the host")
    poll(lambda: len(alive_in_session(sid)) >= 5, 5, "the command's children to start")
    worker.join(10)
    assert len(raised) == 1 and isinstance(raised[0], RemoteCommandTimeout)
    message = str(raised[0])
    assert message.startswith(f"{params.host}: activate: timed out after 2s; the remote process group was killed")
    assert raised[0].exit_code is None
    assert_all_gone(sid, 5, "the timed-out command")


HOLDER = """
import json, sys
sys.path[:0] = [{plugins!r}]
from tars_operators.hooks.ssh import HostSession, SessionParams
with HostSession(SessionParams.from_dict(json.loads(sys.argv[1]))) as s:
    s.run(sys.argv[2], step="stage", timeout=300)
"""


def test_worker_killed_mid_command_leaves_no_process(params: SessionParams) -> None:
    marker = f"tars-killed-{secrets.token_hex(4)}"
    worker = subprocess.Popen([sys.executable, "-c", HOLDER.format(plugins=str(REPO / "plugins")),
                               json.dumps(params.as_dict()), busy_command(marker)], env=os.environ.copy())
    try:
        sid = poll(lambda: command_session(marker), 15, "the worker's command to start on the host")
        poll(lambda: len(alive_in_session(sid)) >= 5, 5, "the command's children to start")
        worker.send_signal(signal.SIGKILL)  # no cleanup at all: the kernel just closes the socket
        worker.wait(5)
        assert_all_gone(sid, 5, "the dead worker's command")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(5)


def test_connection_cut_mid_command_leaves_no_process(params: SessionParams) -> None:
    marker = f"tars-cut-{secrets.token_hex(4)}"
    with HostSession(params) as s:
        s.connect()
        transport = s._hook.client.get_transport()  # type: ignore[union-attr]
        raised: list[BaseException] = []

        def step() -> None:
            try:
                s.run(busy_command(marker), step="health", timeout=120)
            except BaseException as exc:  # noqa: BLE001
                raised.append(exc)

        worker = threading.Thread(target=step)
        worker.start()
        sid = poll(lambda: command_session(marker), 5, "the command to start on the host")
        transport.sock.shutdown(socket.SHUT_RDWR)  # the network goes, no SSH goodbye
        worker.join(10)
        assert len(raised) == 1 and isinstance(raised[0], HostUnreachable)
        assert str(raised[0]).startswith(f"{params.host}: health: connection to {params.address}:")
        assert_all_gone(sid, 5, "the cut-off command")


def test_host_deadline_kills_a_command_whose_controller_hangs(params: SessionParams) -> None:
    """The controller never times out nor closes (a frozen worker): the host's own deadline acts."""
    marker = f"tars-frozen-{secrets.token_hex(4)}"
    with HostSession(params) as s:
        chan = s.connect().get_transport().open_session()  # type: ignore[union-attr]
        chan.exec_command(guarded(busy_command(marker), 1, grace=1))  # host deadline: 2 s
        sid = poll(lambda: command_session(marker), 5, "the command to start on the host")
        assert_all_gone(sid, 8, "the command past its host deadline")
        poll(lambda: chan.closed or chan.exit_status_ready(), 5, "sshd to end the channel")
        chan.close()


def test_a_step_run_after_a_timeout_on_the_same_connection_works(params: SessionParams) -> None:
    with HostSession(params) as s:
        with pytest.raises(RemoteCommandTimeout):
            s.run("sleep 30", step="slow", timeout=0.5)
        assert s.run("echo again", step="next").stdout == "again\n"


def command_check_spec(sandbox: Sandbox, tmp_path: Path, command: str, timeout: float) -> Any:
    from tests.integration.test_steps import demo_spec  # type: ignore[import-not-found]

    check = {"kind": "command", "name": "slow command", "command": command, "timeout": timeout}
    return demo_spec(sandbox, tmp_path / "config", health=[check], smoke=[check])


def test_a_command_check_may_take_longer_than_five_seconds(sandbox: Sandbox, tmp_path: Path) -> None:
    spec = command_check_spec(sandbox, tmp_path, "sleep 7; echo warmed up", 10)
    host = spec.hosts[1]
    with open_session(spec, host) as s:
        result = run_checks(s, spec, host, "1.0.0", kind="health")
    check = result.data["checks"][0]
    assert result.state == "ok" and check["attempts"] == 1 and check["last"] == "exit 0: 'warmed up'"
    assert 7 <= check["seconds"] < 10


def test_a_command_check_in_the_triggerer_gets_its_timeout_and_stays_guarded(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    marker = f"tars-trigger-{secrets.token_hex(4)}"
    spec = command_check_spec(sandbox, tmp_path, f"sleep 7; echo warmed up; : {marker}", 10)
    host = spec.hosts[1]
    checks = [CommandCheck(kind="command", name="slow", command=f"sleep 7; echo ok; : {marker}", timeout=10)]

    async def first(trigger: HealthCheckTrigger) -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    passed = asyncio.run(first(HealthCheckTrigger.for_host(spec, host, "1.0.0", checks)))
    assert passed["status"] == "passed" and passed["checks"][0]["last"] == "exit 0: 'ok'"
    # A hung check is cut at its timeout and its process group does not stay behind.
    hung = [checks[0].model_copy(update={"command": f"sleep 300; : {marker}", "timeout": 2})]
    failed = asyncio.run(first(HealthCheckTrigger.for_host(spec, host, "1.0.0", hung)))
    assert failed["status"] == "failed"
    poll(lambda: command_session(marker) is None, 10, "the hung check's processes to be killed")
