"""The per-host chain with ``steps.<step>.retries``: a drain refused once and a start that failed
once are tried again inside their step, the host ends released and in rotation, and its phases
are the machine's chain, each once. Same local-sh fleet as test_host_chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from tars_operators.config.schema import Steps
from tars_operators.config.spec import AppSpec
from tars_operators.errors import LoadBalancerError, TarsError
from tars_operators.release import hostflow
from tars_operators.steps import policy
from tests.unit.release.test_host_chain import CHAIN, NEW, OLD, Fleet, fleet  # noqa: F401

pytestmark = pytest.mark.unit


def with_steps(f: Fleet, steps: dict[str, object]) -> None:
    c = f.spec.config
    f.spec = AppSpec(c.model_copy(update={"steps": Steps.model_validate(steps)}), f.spec.hosts,
                     f.spec.source, f.spec.global_vars)


def recovers(f: Fleet, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """While a step pauses before its retry, what failed is fixed (the LB accepts, the app starts)."""
    fixed: list[str] = []

    def pause(attempt: int) -> float:
        if f.lb.refuse:
            fixed.append(f.lb.refuse)
            f.lb.refuse = None
        else:
            fixed.append("start")
            f.marker("start-fails").unlink()
        return 0.0

    monkeypatch.setattr(policy, "pause", pause)
    return fixed


def test_retried_steps_finish_the_release(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    fleet.release(OLD, "run-1")
    with_steps(fleet, {"pull_out": {"retries": 1}, "activate": {"retries": 2}})
    fixed = recovers(fleet, monkeypatch)
    fleet.lb.refuse = "drain"
    job = fleet.job(NEW, "run-2")
    fleet.marker("start-fails").touch()
    assert hostflow.run_until_health(job) is None
    hostflow.finish(job)
    result = job.summary("ok")
    assert fixed == ["drain", "start"]
    assert result["phases"] == CHAIN
    details = {s["step"]: s["detail"] for s in result["steps"]}
    assert details["pull_out"].endswith("(attempt 2 of 2)")
    assert details["activate"].endswith("(attempt 2 of 3)")
    assert (fleet.current(), fleet.serving(), fleet.lb.status["host01"]) == (NEW, NEW, "UP")


def test_without_retries_the_same_refusal_fails_the_host(fleet: Fleet) -> None:  # noqa: F811
    fleet.release(OLD, "run-1")
    fleet.lb.refuse = "drain"
    job = fleet.job(NEW, "run-2")
    with pytest.raises(LoadBalancerError) as exc:
        hostflow.run_until_health(job)
    message = hostflow.failure(job, exc.value)
    assert message.startswith("host01 failed@pull_out: ")
    assert (fleet.current(), fleet.serving()) == (OLD, OLD)


def test_retries_used_up_name_the_attempts_in_the_hosts_failure(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    fleet.release(OLD, "run-1")
    with_steps(fleet, {"pull_in": {"retries": 1}})
    monkeypatch.setattr(policy, "pause", lambda attempt: 0.0)
    job = fleet.job(NEW, "run-2")
    assert hostflow.run_until_health(job) is None
    fleet.lb.refuse = "enable"
    with pytest.raises(TarsError) as exc:
        hostflow.finish(job)
    message = hostflow.failure(job, exc.value)
    assert message.startswith("host01 failed@pull_in: enable refused by memory")
    assert "(failed 2 attempts; steps.pull_in.retries: 1)" in message
    assert fleet.lb.status["host01"] != "UP"
