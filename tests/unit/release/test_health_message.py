"""The health error a person reads times the whole check, not the part left for the triggerer."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tars_operators.triggers import health

pytestmark = pytest.mark.unit


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _failure(elapsed: float, timeout: float = 0.4) -> str:
    check = {"kind": "http", "name": "http", "url": f"http://127.0.0.1:{_closed_port()}/health",
             "expect_status": 200, "expect_body": None, "timeout": timeout, "interval": 0.1,
             "successes": 2, "request_timeout": 0.2}
    trigger = health.HealthCheckTrigger(host="web01", version="2.0.0", checks=[check],
                                        elapsed=elapsed)
    assert health.HealthCheckTrigger(**trigger.serialize()[1]).elapsed == elapsed

    async def first() -> dict:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    payload = asyncio.run(first())
    assert payload["status"] == "failed"
    return payload["message"]


def test_a_check_continued_in_the_triggerer_is_reported_against_its_configured_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "RESUME_GUARD_SECONDS", 0)
    # configured 10.4 s: 10 s inline in the task, 0.4 s left for the triggerer
    message = _failure(elapsed=10.0)
    assert message.startswith("health check 'http' did not pass within its 10.4s timeout "
                              "(checked for 10s: 10s by the task, then 0s in the triggerer; "
                              "2 consecutive successes needed); last response: "), message
    assert "within 0.4s" not in message


def test_a_check_run_only_by_the_triggerer_keeps_its_own_wording(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "RESUME_GUARD_SECONDS", 0)
    assert "did not pass within 0.4s" in _failure(elapsed=0.0)
