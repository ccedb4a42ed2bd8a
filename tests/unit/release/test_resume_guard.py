"""The health trigger never resumes its task sooner than RESUME_GUARD_SECONDS after it began
waiting (works around apache/airflow#71580/#72716: a task resumed within seconds of its
deferral can be marked failed by the executor's stale success event)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from tars_operators.triggers import health

pytestmark = pytest.mark.unit


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trigger(url: str) -> health.HealthCheckTrigger:
    check = {"kind": "http", "name": "health", "url": url, "expect_status": 200,
             "expect_body": None, "timeout": 0.3, "interval": 0.1, "successes": 1,
             "request_timeout": 0.2}
    return health.HealthCheckTrigger(host="h1", version="2.0.0", checks=[check])


def test_a_quick_verdict_waits_for_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "RESUME_GUARD_SECONDS", 1.5)
    trigger = _trigger(f"http://127.0.0.1:{_closed_port()}/health")

    async def first() -> tuple[dict, float]:
        started = time.monotonic()
        async for event in trigger.run():
            return event.payload, time.monotonic() - started
        raise AssertionError("no event")

    payload, took = asyncio.run(first())
    assert payload["status"] == "failed"
    assert took >= 1.5, took


def test_a_brake_released_at_once_resumes_the_host_task_no_sooner_than_the_guard(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The brake trigger has the same guard: the e2e brake test releases the brake within
    seconds of the host task deferring, and the resumed task was then failed by Airflow."""
    import airflow.sdk

    from tars_operators.triggers import brake, guard

    monkeypatch.setattr(guard, "RESUME_GUARD_SECONDS", 1.5)
    monkeypatch.setattr(airflow.sdk.Variable, "get", staticmethod(lambda key, default=None: None))

    async def first() -> tuple[dict, float]:
        started = time.monotonic()
        async for event in brake.BrakeReleasedTrigger("demo", poll_seconds=0.1).run():
            return event.payload, time.monotonic() - started
        raise AssertionError("no event")

    payload, took = asyncio.run(first())
    assert payload == {"brake": "released"}
    assert took >= 1.5, took
