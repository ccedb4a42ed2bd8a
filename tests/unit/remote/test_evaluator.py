from __future__ import annotations

import pytest

from tars_operators.steps.evaluator import (
    CheckProgress,
    Observation,
    ResolvedCheck,
    judge_command,
    judge_http,
)

pytestmark = pytest.mark.unit

OK, BAD = Observation(True, "HTTP 200: 'ok'"), Observation(False, "HTTP 503: 'unhealthy'")


def check(**kw: object) -> ResolvedCheck:
    base: dict[str, object] = {"name": "h", "kind": "http", "interval": 1.0, "timeout": 10.0, "successes": 3,
                               "url": "http://x/health"}
    return ResolvedCheck(**{**base, **kw})  # type: ignore[arg-type]


def test_needs_consecutive_successes() -> None:
    p = CheckProgress(check(), started=0.0)
    assert [p.record(o, t) for t, o in enumerate([OK, OK, BAD, OK, OK])] == ["pending"] * 5
    assert p.record(OK, 5.0) == "passed" and p.attempts == 6


def test_times_out_with_the_last_response() -> None:
    p = CheckProgress(check(successes=1), started=0.0)
    assert p.record(BAD, 3.0) == "pending"
    assert p.record(Observation(False, "HTTP 503: 'unhealthy: broken build'"), 10.0) == "timed_out"
    message = p.failure_message("health")
    assert "did not pass within 10s" in message and "503" in message and "broken build" in message


def test_a_success_at_the_deadline_still_counts() -> None:
    assert CheckProgress(check(successes=1), 0.0).record(OK, 99.0) == "passed"


def test_waits_never_pass_the_deadline() -> None:
    p = CheckProgress(check(interval=5.0, timeout=7.0), 0.0)
    assert p.next_wait(1.0) == 5.0 and p.next_wait(4.0) == 3.0 and p.next_wait(8.0) == 0.0
    assert p.probe_timeout(6.9) == 0.5 and p.probe_timeout(0.0) == 5.0


def test_judge_http() -> None:
    c = check(expect_body="version")
    assert judge_http(c, 200, '{"version": "1"}').ok
    assert "expected 200" in judge_http(c, 503, "unhealthy").summary
    assert "body lacks" in judge_http(c, 200, "hello").summary
    assert len(judge_http(c, 500, "x" * 1000).summary) < 240  # first 200 chars only


def test_judge_command() -> None:
    c = check(kind="command", command="true", expect_exit=0)
    assert judge_command(c, 0, "fine", "").ok
    assert judge_command(c, 1, "", "nope").summary.startswith("exit 1 (expected 0)")
    assert "timed out" in judge_command(c, None, "", "").summary


def test_round_trips_through_trigger_kwargs() -> None:
    c = check(kind="tcp", address="127.0.0.1", port=80)
    assert ResolvedCheck.from_dict(c.as_dict()) == c


def test_a_command_attempt_may_use_the_whole_check_timeout() -> None:
    # A command check has no per-request field: one attempt may run until the check's deadline
    # (a 7 s command under timeout 10 passes), never the http request_timeout of 5 s.
    p = CheckProgress(check(kind="command", command="sleep 7", timeout=10.0, successes=1), 0.0)
    assert p.probe_timeout(0.0) == 10.0 and p.probe_timeout(2.5) == 7.5 and p.probe_timeout(9.9) == 0.5
    http = CheckProgress(check(timeout=10.0, request_timeout=2.0), 0.0)
    assert http.probe_timeout(0.0) == 2.0 and check(kind="command", timeout=30.0).attempt_timeout == 30.0
