"""A host step's own policy, ``steps.<step>``: its timeout and its retries, applied in one place.

Retries are for what can pass on a second try: a command that failed or timed out, a host
that could not be reached, a load balancer that refused or was unreachable, a smoke test that
failed. What fails the same way every time is never retried: a bad value, a checksum or an
archive refused, no space, another run's lease, the capacity floor. Every step is idempotent
(a retry finds what the failed attempt left and goes on from there), so a retry is safe.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Callable, Literal

from tars_operators.config.schema import StepPolicy
from tars_operators.config.spec import AppSpec
from tars_operators.errors import (
    HealthCheckFailed,
    HostUnreachable,
    InsufficientSpace,
    LeaseHeld,
    LeaseLost,
    LoadBalancerError,
    RemoteCommandError,
    UnsafeArchive,
)
from tars_operators.results import StepResult

PolicyStep = Literal["stage", "pull_out", "activate", "smoke", "pull_in"]
RETRYABLE: tuple[type[Exception], ...] = (RemoteCommandError, HostUnreachable, HealthCheckFailed,
                                          LoadBalancerError)
NEVER_RETRIED: tuple[type[Exception], ...] = (UnsafeArchive, InsufficientSpace, LeaseHeld, LeaseLost)
MAX_PAUSE = 10.0
log_ = logging.getLogger(__name__)


def policy(spec: AppSpec, step: PolicyStep) -> StepPolicy:
    """``steps.<step>`` of the app."""
    policies: dict[str, StepPolicy] = {
        "stage": spec.config.steps.stage, "pull_out": spec.config.steps.pull_out,
        "activate": spec.config.steps.activate, "smoke": spec.config.steps.smoke,
        "pull_in": spec.config.steps.pull_in,
    }
    return policies[step]


def retryable(exc: BaseException) -> bool:
    """Whether another attempt of the step may pass."""
    return isinstance(exc, RETRYABLE) and not isinstance(exc, NEVER_RETRIED)


def pause(attempt: int) -> float:
    """Seconds before attempt ``attempt + 1`` (1 s, 2 s, 4 s …, at most 10 s)."""
    return min(MAX_PAUSE, 2.0 ** (attempt - 1))


class Deadline:
    """The end of a step's ``steps.<step>.timeout`` (none: no limit of its own)."""

    def __init__(self, spec: AppSpec, step: PolicyStep, *, clock: Callable[[], float] = time.monotonic):
        self.step, self.timeout, self.clock = step, policy(spec, step).timeout, clock
        self.at = None if self.timeout is None else clock() + self.timeout

    def left(self) -> float | None:
        """Seconds left (>= 0), or None without a timeout."""
        return None if self.at is None else max(0.0, self.at - self.clock())

    def cap(self, seconds: float) -> float:
        """``seconds``, or what is left of the step when that is less."""
        left = self.left()
        return seconds if left is None else min(seconds, left)

    def cuts(self, seconds: float) -> bool:
        """True when the step's timeout ends a wait of ``seconds`` (started now) early."""
        left = self.left()
        return left is not None and left < seconds

    def setting(self) -> str:
        return f"steps.{self.step}.timeout ({self.timeout:g}s)"


def with_retries(spec: AppSpec, host: str, step: PolicyStep, attempt: Callable[[int], StepResult], *,
                 log: logging.Logger | logging.LoggerAdapter = log_,  # type: ignore[type-arg]
                 sleep: Callable[[float], None] = time.sleep) -> StepResult:
    """``attempt(n)`` (n = 0, 1, …) until it returns, at most ``steps.<step>.retries`` more times
    after a retryable failure. The last failure says how many attempts were made."""
    retries = policy(spec, step).retries
    number = 0
    while True:
        try:
            result = attempt(number)
        except Exception as exc:
            if not retryable(exc):
                raise
            if number >= retries:
                if retries:
                    _tell_attempts(exc, f" (failed {number + 1} attempts; steps.{step}.retries: {retries})")
                raise
            number += 1
            wait = pause(number)
            log.warning("%s: %s: attempt %d of %d failed: %s; retrying in %gs (steps.%s.retries: %d)",
                        host, step, number, retries + 1, exc, wait, step, retries)
            sleep(wait)
            continue
        if not number:
            return result
        return replace(result, detail=f"{result.detail} (attempt {number + 1} of {retries + 1})",
                       data={**result.data, "attempts": number + 1})


def _tell_attempts(exc: BaseException, text: str) -> None:
    """Append ``text`` to the error's message, keeping its type (callers match on it)."""
    if len(exc.args) == 1 and isinstance(exc.args[0], str):
        exc.args = (exc.args[0] + text,)
