"""LB outages are waited out in one place (the LoadBalancer base): transport failures retried with
backoff until traffic.api_deadline, refusals at once, the final error naming host, step and LB."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tars_operators.errors import LoadBalancerError, LoadBalancerUnreachable
from tars_operators.hooks.lb.base import Backoff, ServerState
from tars_operators.hooks.lb.command import CommandBalancer
from tars_operators.hooks.lb.haproxy import HaproxyBalancer
from tars_operators.hooks.lb.remote import CommandOutput
from tars_operators.hooks.lb.runtime_api import RuntimeAPI
from tars_operators.steps.traffic import pull_in, pull_out, rotation_report
from tests.unit.lb.conftest import MakeSpec, MemoryLB

pytestmark = pytest.mark.unit
TRAFFIC = {"provider": "haproxy", "haproxy": {"socket": "/x", "backend": "demo"}}


class FlakyLB(MemoryLB):
    """MemoryLB whose API is unreachable for the first `outage` seconds (or calls)."""

    def __init__(self, spec, outage_calls: int = 0, refuse: str = "") -> None:
        super().__init__(spec)
        self.outage_calls, self.refuse, self.attempts = outage_calls, refuse, 0
        self.backoff = Backoff(first=0.01, cap=0.05)

    def _state(self, host):
        self.attempts += 1
        if self.refuse:
            raise LoadBalancerError(self.refuse)
        if self.outage_calls > 0:
            self.outage_calls -= 1
            raise LoadBalancerUnreachable("socket /x: [Errno 2] No such file or directory")
        return super()._state(host)


def test_backoff_grows_with_jitter_and_never_passes_the_deadline() -> None:
    backoff = Backoff(first=0.1, factor=2, cap=1.0)
    pauses = [backoff.pause(n, 100) for n in range(1, 8)]
    assert 0.05 <= pauses[0] <= 0.1 and 0.1 <= pauses[1] <= 0.2 and 0.2 <= pauses[2] <= 0.4
    assert all(0.5 <= p <= 1.0 for p in pauses[4:])  # capped
    assert len({backoff.pause(5, 100) for _ in range(20)}) > 1  # jittered
    assert backoff.pause(9, 0.02) <= 0.02


def test_an_outage_shorter_than_the_deadline_is_waited_out(
        make_spec: MakeSpec, caplog: pytest.LogCaptureFixture) -> None:
    spec = make_spec({**TRAFFIC, "api_deadline": 5}, hosts=4)
    lb = FlakyLB(spec, outage_calls=3)
    with caplog.at_level(logging.WARNING):
        out = pull_out(lb, spec, spec.hosts[1])
    assert out.state == "ok" and out.data["status"] == "DRAIN"
    waits = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(waits) == 3
    assert waits[0].startswith("host02: pull_out: load balancer unreachable while trying to read "
                               "the state of the servers (socket /x: [Errno 2] No such file")
    assert "attempt 1 failed" in waits[0] and "left of traffic.api_deadline 5s)" in waits[0]


def test_after_the_deadline_the_error_names_host_step_lb_and_time(make_spec: MakeSpec) -> None:
    spec = make_spec({**TRAFFIC, "api_deadline": 0.3}, hosts=4)
    lb = FlakyLB(spec, outage_calls=10**6)
    started = time.monotonic()
    with pytest.raises(LoadBalancerUnreachable) as err:
        pull_in(lb, spec, spec.hosts[2])
    took = time.monotonic() - started
    assert 0.3 <= took < 1.5
    message = str(err.value)
    assert message.startswith("host03: pull_in: memory unreachable for 0.")
    assert "traffic.api_deadline 0.3s) while trying to read the state of host03: socket /x" in message
    assert lb.attempts > 3


def test_a_refusal_is_not_retried(make_spec: MakeSpec) -> None:
    spec = make_spec({**TRAFFIC, "api_deadline": 30}, hosts=2)
    lb = FlakyLB(spec, refuse="haproxy refused 'set server': No such server.")
    with pytest.raises(LoadBalancerError, match="No such server") as err:
        lb.state(spec.hosts[0])
    assert not isinstance(err.value, LoadBalancerUnreachable) and lb.attempts == 1


def test_deadline_zero_tries_once(make_spec: MakeSpec) -> None:
    spec = make_spec({**TRAFFIC, "api_deadline": 0}, hosts=2)
    lb = FlakyLB(spec, outage_calls=1)
    with pytest.raises(LoadBalancerUnreachable, match=r"\(1 attempt, traffic.api_deadline 0s\)"):
        lb.state(spec.hosts[0])


def test_nested_calls_share_one_deadline(make_spec: MakeSpec) -> None:
    """A provider step that reads state inside enable must not retry twice over (2 × deadline)."""
    spec = make_spec({**TRAFFIC, "api_deadline": 0.3}, hosts=2)
    lb = FlakyLB(spec, outage_calls=10**6)
    lb._enable = lambda host: lb.state(host)  # type: ignore[method-assign]
    started = time.monotonic()
    with pytest.raises(LoadBalancerUnreachable, match="while trying to enable host01"):
        lb.enable(spec.hosts[0])
    assert time.monotonic() - started < 0.9


def test_rotation_report_does_not_wait_per_host_when_the_lb_is_gone(make_spec: MakeSpec) -> None:
    spec = make_spec({**TRAFFIC, "api_deadline": 0.2}, hosts=5)
    lb = FlakyLB(spec, outage_calls=10**6)
    started = time.monotonic()
    report = rotation_report(lb, spec, spec.hosts)
    assert time.monotonic() - started < 0.8
    assert report.error.startswith("host01, host02, host03, host04, host05: rotation check: memory "
                                   "unreachable for")


# -- what each transport counts as an outage ----------------------------------------------------
def _haproxy(make_spec: MakeSpec, sock: Path, deadline: float) -> HaproxyBalancer:
    spec = make_spec({"provider": "haproxy", "api_deadline": deadline,
                      "haproxy": {"socket": str(sock), "backend": "demo"}}, hosts=1)
    lb = HaproxyBalancer(spec)
    lb.backoff = Backoff(first=0.02, cap=0.1)
    return lb


def _serve_set_server(path: Path, answer: bytes, ready: threading.Event) -> Callable[[], None]:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(4)
    ready.set()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(answer)
        server.close()

    return serve


def test_runtime_api_socket_that_appears_late_is_waited_for(make_spec: MakeSpec, tmp_path: Path) -> None:
    sock = tmp_path / "admin.sock"
    lb = _haproxy(make_spec, sock, deadline=5)
    ready = threading.Event()

    def appear_later() -> None:
        time.sleep(0.4)
        _serve_set_server(sock, b"\n", ready)()

    thread = threading.Thread(target=appear_later)
    thread.start()
    lb.drain(lb.spec.hosts[0])  # succeeds once the socket is there
    thread.join(5)
    assert ready.is_set()


def test_runtime_api_refusal_answer_is_not_an_outage(make_spec: MakeSpec, tmp_path: Path) -> None:
    sock = tmp_path / "admin.sock"
    lb = _haproxy(make_spec, sock, deadline=30)
    ready = threading.Event()
    thread = threading.Thread(target=_serve_set_server(sock, b"Permission denied\n", ready))
    thread.start()
    started = time.monotonic()
    with pytest.raises(LoadBalancerError, match="haproxy refused .*Permission denied") as err:
        lb.drain(lb.spec.hosts[0])
    assert not isinstance(err.value, LoadBalancerUnreachable) and time.monotonic() - started < 2
    thread.join(5)


def test_runtime_api_missing_socket_is_an_outage(tmp_path: Path) -> None:
    with pytest.raises(LoadBalancerUnreachable, match="No such file or directory"):
        RuntimeAPI(socket_path=str(tmp_path / "gone.sock")).ask("show stat")
    with pytest.raises(LoadBalancerUnreachable, match="refused"):
        RuntimeAPI(address="127.0.0.1:1").ask("show stat")


@pytest.mark.parametrize(("reply", "outage"), [
    (CommandOutput(None, "", "killed"), True),  # timed out
    (CommandOutput(75, "", "lb busy, try again"), True),  # EX_TEMPFAIL
    (CommandOutput(1, "", "No such server."), False),
])
def test_command_exit_codes(make_spec: MakeSpec, reply: CommandOutput, outage: bool) -> None:
    spec = make_spec({"provider": "command", "api_deadline": 0.2,
                      "command": {"drain": "lbctl drain", "enable": "x"}}, hosts=1)
    calls: list[str] = []

    def runner(command: str, timeout: float) -> CommandOutput:
        calls.append(command)
        return reply

    lb = CommandBalancer(spec, runner=runner)
    lb.backoff = Backoff(first=0.02, cap=0.05)
    with pytest.raises(LoadBalancerError) as err:
        lb.drain(spec.hosts[0])
    assert isinstance(err.value, LoadBalancerUnreachable) is outage
    assert (len(calls) > 1) is outage


def test_an_unknown_state_stays_trusted() -> None:
    assert ServerState("h", "UNKNOWN", "unknown", None).in_service


def test_ssh_lost_is_an_outage_but_a_rejected_login_is_not() -> None:
    import paramiko

    from tars_operators.errors import HostUnreachable, RemoteCommandError
    from tars_operators.hooks.lb.remote import _transient

    lost = HostUnreachable("lb1", "nginx upstream", "connection to 127.0.0.9:22 lost: EOF")
    assert _transient(lost) and _transient(RemoteCommandError("lb1", "x", None, "timed out"))
    login = HostUnreachable("lb1", "nginx upstream", "cannot connect: Authentication failed")
    login.__cause__ = paramiko.AuthenticationException("Authentication failed")
    assert not _transient(login)
    assert not _transient(RemoteCommandError("lb1", "x", 2, "no such file"))
