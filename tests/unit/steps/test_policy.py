"""steps.<step>.timeout and .retries do what docs/config.md says: a failed attempt of a step that
may pass is tried again, the step's timeout ends its waits, and the final error says so."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tars_operators.config.schema import AppConfig
from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import (
    CapacityError,
    HealthCheckFailed,
    InsufficientSpace,
    InvalidValue,
    LeaseHeld,
    LoadBalancerError,
    LoadBalancerUnreachable,
    RemoteCommandError,
    UnsafeArchive,
)
from tars_operators.hooks.lb.base import Backoff, ServerState
from tars_operators.results import StepResult
from tars_operators.steps import policy
from tars_operators.steps.checks import run_checks
from tars_operators.steps.traffic import pull_in, pull_out
from tests.unit.lb.conftest import MemoryLB

pytestmark = pytest.mark.unit
TRAFFIC = {"provider": "haproxy", "haproxy": {"socket": "/x", "backend": "demo"}}


def make_spec(steps: dict[str, Any] | None = None, traffic: dict[str, Any] | None = None,
              smoke: list[dict[str, Any]] | None = None, hosts: int = 4) -> AppSpec:
    config = AppConfig.model_validate({
        "app": {"name": "demo", "owner": "team"},
        "artifact": {"url": "http://a/demo-{{ version }}.tar.gz", "checksum": {"url": "{{ url }}.sha256"}},
        "hosts": {}, "service": {"start": "start", "stop": "stop"},
        "traffic": traffic or TRAFFIC, "steps": steps or {}, "smoke": smoke or [],
    })
    fleet = tuple(Host(name=f"host{i:02d}", address=f"127.0.0.{10 + i}") for i in range(1, hosts + 1))
    return AppSpec(config=config, hosts=fleet, source=Path("/cfg/demo.yaml"))


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Retries pause 1 s, 2 s … in production; here they record the attempt and go on."""
    pauses: list[int] = []
    monkeypatch.setattr(policy, "pause", lambda attempt: pauses.append(attempt) or 0.0)
    return pauses


def flaky(failures: list[Exception]) -> Any:
    calls: list[int] = []

    def attempt(number: int) -> StepResult:
        calls.append(number)
        if failures:
            raise failures.pop(0)
        return StepResult("host01", "stage", "ok", "2.0.0", 0.1, "staged 2.0.0")

    attempt.calls = calls  # type: ignore[attr-defined]
    return attempt


def test_a_failed_attempt_is_retried_up_to_retries_times(no_pause: list[int]) -> None:
    spec = make_spec({"stage": {"retries": 2}})
    attempt = flaky([RemoteCommandError("host01", "stage", 1, "boom"), RemoteCommandError("host01", "stage", 1, "boom")])
    result = policy.with_retries(spec, "host01", "stage", attempt)
    assert attempt.calls == [0, 1, 2] and no_pause == [1, 2]
    assert result.detail == "staged 2.0.0 (attempt 3 of 3)" and result.data["attempts"] == 3


def test_the_last_failure_says_how_many_attempts_were_made() -> None:
    spec = make_spec({"stage": {"retries": 1}})
    attempt = flaky([RemoteCommandError("host01", "stage", 1, "") for _ in range(3)])
    with pytest.raises(RemoteCommandError) as caught:
        policy.with_retries(spec, "host01", "stage", attempt)
    assert attempt.calls == [0, 1]
    assert str(caught.value) == "host01: stage: exit code 1 (failed 2 attempts; steps.stage.retries: 1)"


def test_without_retries_one_attempt_and_the_error_is_unchanged() -> None:
    attempt = flaky([RemoteCommandError("host01", "stage", 1, "")])
    with pytest.raises(RemoteCommandError) as caught:
        policy.with_retries(make_spec(), "host01", "stage", attempt)
    assert attempt.calls == [0] and str(caught.value) == "host01: stage: exit code 1"


@pytest.mark.parametrize("error", [
    UnsafeArchive("refusing unsafe archive: '../x'"),
    InsufficientSpace("host01", "stage", 70, "not enough free space"),
    LeaseHeld("host01", "stage", "held by run r0"),
    CapacityError("would leave 1 of 4 hosts in service"),
    InvalidValue("version '$(id)' not allowed"),
    ValueError("a bug"),
])
def test_what_fails_the_same_way_every_time_is_not_retried(error: Exception) -> None:
    attempt = flaky([error])
    with pytest.raises(type(error)):
        policy.with_retries(make_spec({"stage": {"retries": 3}}), "host01", "stage", attempt)
    assert attempt.calls == [0]


class StubbornLB(MemoryLB):
    """MemoryLB that refuses the first ``refusals`` drains, or never reports a host UP again."""

    def __init__(self, spec: AppSpec, *, refusals: int = 0, stays_down: bool = False,
                 unreachable: bool = False) -> None:
        super().__init__(spec)
        self.refusals, self.stays_down, self.unreachable = refusals, stays_down, unreachable
        self.backoff = Backoff(first=0.01, cap=0.05)

    def _drain(self, host: Host) -> None:
        if self.refusals:
            self.refusals -= 1
            raise LoadBalancerError(f"{host.name}: drain refused: backend busy")
        super()._drain(host)

    def _enable(self, host: Host) -> None:
        self._set("enable", host, "DOWN" if self.stays_down else "UP")

    def _state(self, host: Host) -> ServerState:
        if self.unreachable and self.calls:
            raise LoadBalancerUnreachable("socket /x: [Errno 111] Connection refused")
        return super()._state(host)


def test_pull_out_retries_a_refused_drain() -> None:
    spec = make_spec({"pull_out": {"retries": 1}})
    lb = StubbornLB(spec, refusals=1)
    out = pull_out(lb, spec, spec.hosts[0])
    assert out.state == "ok" and out.data["status"] == "DRAIN" and out.data["attempts"] == 2
    with pytest.raises(LoadBalancerError, match=r"drain refused.*\(failed 2 attempts; steps.pull_out.retries: 1\)"):
        pull_out(StubbornLB(spec, refusals=2), spec, spec.hosts[1])


def test_pull_out_timeout_ends_the_drain_wait_and_forces_maint() -> None:
    spec = make_spec({"pull_out": {"timeout": 0.3}}, {**TRAFFIC, "drain_timeout": 60})
    lb = StubbornLB(spec)
    lb.sessions["host01"] = 3  # never drains by itself
    started = time.monotonic()
    out = pull_out(lb, spec, spec.hosts[0])
    assert time.monotonic() - started < 5
    assert out.data["forced_maint"] is True and out.data["status"] == "MAINT"
    assert out.detail == "steps.pull_out.timeout 0.3s with 3 sessions left; forced MAINT"


def test_pull_out_timeout_ends_the_wait_for_an_unreachable_lb() -> None:
    spec = make_spec({"pull_out": {"timeout": 0.5}}, {**TRAFFIC, "api_deadline": 60})
    lb = StubbornLB(spec, unreachable=True)  # reachable until the drain, then gone
    started = time.monotonic()
    with pytest.raises(LoadBalancerUnreachable) as caught:
        pull_out(lb, spec, spec.hosts[0])
    assert time.monotonic() - started < 5
    assert str(caught.value).startswith("host01: pull_out: memory unreachable for ")
    assert str(caught.value).endswith("(the step's steps.pull_out.timeout (0.5s) is up)")


def test_pull_in_timeout_ends_the_wait_for_up() -> None:
    spec = make_spec({"pull_in": {"timeout": 0.3, "retries": 1}}, {**TRAFFIC, "ready_timeout": 60})
    lb = StubbornLB(spec, stays_down=True)
    started = time.monotonic()
    with pytest.raises(LoadBalancerError) as caught:
        pull_in(lb, spec, spec.hosts[0])
    assert 0.6 <= time.monotonic() - started < 5  # two attempts of 0.3 s
    assert str(caught.value).startswith(
        "host01: pull_in: memory does not report host01 UP after 0.3s (steps.pull_in.timeout): DOWN")
    assert str(caught.value).endswith("(failed 2 attempts; steps.pull_in.retries: 1)")
    assert lb.calls == [("enable", "host01"), ("enable", "host01")]


class App(BaseHTTPRequestHandler):
    """Answers 503 to the first ``failures`` requests, then 200; ``slow`` seconds per request."""

    failures, slow, seen = 0, 0.0, 0

    def do_GET(self) -> None:  # noqa: N802
        type(self).seen += 1
        time.sleep(self.slow)
        ok = type(self).seen > self.failures
        body = b"version 2.0.0" if ok else b"warming up"
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def app() -> Iterator[tuple[str, type[App]]]:
    handler = type("Handler", (App,), {"failures": 0, "slow": 0.0, "seen": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", handler
    finally:
        server.shutdown()
        server.server_close()


def test_smoke_retries_run_the_smoke_tests_again(app: tuple[str, type[App]]) -> None:
    url, handler = app
    handler.failures = 2
    smoke = [{"kind": "http", "url": url, "expect_body": "{{ version }}"}]
    spec = make_spec({"smoke": {"retries": 2}}, smoke=smoke)
    result = run_checks(None, spec, spec.hosts[0], "2.0.0", kind="smoke")
    assert result.state == "ok" and result.data["attempts"] == 3 and handler.seen == 3
    handler.seen = 0
    with pytest.raises(HealthCheckFailed, match=r"HTTP 503.*\(failed 2 attempts; steps.smoke.retries: 1\)"):
        run_checks(None, make_spec({"smoke": {"retries": 1}}, smoke=smoke), spec.hosts[0], "2.0.0",
                   kind="smoke")


def test_smoke_timeout_bounds_all_the_smoke_tests_together(app: tuple[str, type[App]]) -> None:
    url, handler = app
    handler.slow = 0.4
    smoke = [{"kind": "http", "url": url, "name": "first", "request_timeout": 5},
             {"kind": "http", "url": url, "name": "second", "request_timeout": 5}]
    spec = make_spec({"smoke": {"timeout": 0.2}}, smoke=smoke)
    started = time.monotonic()
    with pytest.raises(HealthCheckFailed) as caught:
        run_checks(None, spec, spec.hosts[0], "2.0.0", kind="smoke")
    assert time.monotonic() - started < 2
    message = str(caught.value)
    assert message.startswith("host01: smoke: 2 of 2 smoke tests failed: 'first': ")
    assert "(steps.smoke.timeout (0.2s) is up)" in message
    assert message.endswith("'second': not run: steps.smoke.timeout (0.2s) is up")
