"""The check evaluator: resolved checks, how one response is judged, and the state machine
that turns a stream of responses into pass / keep waiting / timed out.

Pure code shared by the blocking path (``steps.checks.run_checks``) and the async trigger
(``triggers.health.HealthCheckTrigger``): only the probing differs between them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

from tars_operators.config.schema import CommandCheck, HttpCheck, TcpCheck
from tars_operators.config.spec import AppSpec, Host
from tars_operators.config.templating import host_context, render

Verdict = Literal["passed", "pending", "timed_out"]
BODY_CHARS = 200


@dataclass(frozen=True)
class ResolvedCheck:
    """One check with its templates rendered for a host; JSON-serializable (trigger kwargs)."""

    name: str
    kind: Literal["http", "tcp", "command"]
    interval: float
    timeout: float
    successes: int
    url: str = ""
    expect_status: int = 200
    expect_body: str | None = None
    request_timeout: float = 5.0
    address: str = ""
    port: int = 0
    command: str = ""
    expect_exit: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResolvedCheck:
        return cls(**data)

    @property
    def attempt_timeout(self) -> float:
        """Limit of one attempt: http its ``request_timeout``; a command may run for the check's
        whole ``timeout`` (it has no per-request field); tcp a connect of ``request_timeout``."""
        return self.timeout if self.kind == "command" else self.request_timeout


def resolve_checks(
    spec: AppSpec, host: Host, version: str, checks: Sequence[HttpCheck | TcpCheck | CommandCheck]
) -> list[ResolvedCheck]:
    """Render every check's templates for ``host`` (URLs, ports, commands)."""
    ctx = host_context(spec, host, version)
    return [resolve_check(check, ctx) for check in checks]


def resolve_check(check: HttpCheck | TcpCheck | CommandCheck, ctx: dict[str, Any]) -> ResolvedCheck:
    common: dict[str, Any] = {"interval": check.interval, "timeout": check.timeout,
                              "successes": check.successes}
    if isinstance(check, HttpCheck):
        url = render(check.url, ctx)
        return ResolvedCheck(name=check.name or f"http {url}", kind="http", url=url,
                             expect_status=check.expect_status,
                             expect_body=None if check.expect_body is None else render(check.expect_body, ctx),
                             request_timeout=check.request_timeout, **common)
    if isinstance(check, TcpCheck):
        address, port = render(check.address, ctx), int(render(str(check.port), ctx))
        return ResolvedCheck(name=check.name or f"tcp {address}:{port}", kind="tcp",
                             address=address, port=port, **common)
    command = render(check.command, ctx)
    return ResolvedCheck(name=check.name or f"command {command[:60]}", kind="command",
                         command=command, expect_exit=check.expect_exit, **common)


@dataclass(frozen=True)
class Observation:
    """One probe's outcome: passed or not, and what was seen (shown in errors and results)."""

    ok: bool
    summary: str


def _clip(text: str) -> str:
    text = text.strip()
    return repr(text[:BODY_CHARS] + ("…" if len(text) > BODY_CHARS else ""))


def judge_http(check: ResolvedCheck, status: int, body: str) -> Observation:
    if status != check.expect_status:
        return Observation(False, f"HTTP {status} (expected {check.expect_status}): {_clip(body)}")
    if check.expect_body is not None and check.expect_body not in body:
        return Observation(False, f"HTTP {status} (body lacks {check.expect_body!r}): {_clip(body)}")
    return Observation(True, f"HTTP {status}: {_clip(body)}")


def judge_tcp(error: str | None) -> Observation:
    return Observation(error is None, "connected" if error is None else f"connection failed: {error}")


def judge_command(check: ResolvedCheck, exit_code: int | None, stdout: str, stderr: str) -> Observation:
    shown = _clip(stdout if stdout.strip() else stderr)
    if exit_code is None:
        return Observation(False, f"command timed out: {shown}")
    why = "" if exit_code == check.expect_exit else f" (expected {check.expect_exit})"
    return Observation(exit_code == check.expect_exit, f"exit {exit_code}{why}: {shown}")


def judge_error(error: BaseException) -> Observation:
    """A probe that could not even get a response (refused, timeout, SSH failure)."""
    return Observation(False, f"error: {type(error).__name__}: {str(error)[:BODY_CHARS]}")


class CheckProgress:
    """Consecutive-success state machine for one check, driven by the caller's clock."""

    def __init__(self, check: ResolvedCheck, started: float):
        self.check = check
        self.started = started
        self.deadline = started + check.timeout
        self.consecutive = 0
        self.attempts = 0
        self.last: Observation | None = None

    def record(self, observation: Observation, now: float) -> Verdict:
        self.attempts += 1
        self.last = observation
        self.consecutive = self.consecutive + 1 if observation.ok else 0
        if self.consecutive >= self.check.successes:
            return "passed"
        return "timed_out" if now >= self.deadline else "pending"

    def remaining(self, now: float) -> float:
        return max(0.0, self.deadline - now)

    def next_wait(self, now: float) -> float:
        """Seconds to sleep before the next probe (never past the deadline)."""
        return min(self.check.interval, self.remaining(now))

    def probe_timeout(self, now: float) -> float:
        """Time budget for one probe: the check's own limit, capped by the deadline (≥ 0.5 s)."""
        return max(0.5, min(self.check.attempt_timeout, self.remaining(now)))

    def failure_message(self, kind: str) -> str:
        last = self.last.summary if self.last else "no response"
        return (
            f"{kind} check {self.check.name!r} did not pass within {self.check.timeout:g}s "
            f"({self.check.successes} consecutive successes needed, {self.attempts} attempts); "
            f"last response: {last}"
        )

    def summary(self, now: float) -> dict[str, Any]:
        return {"name": self.check.name, "kind": self.check.kind, "attempts": self.attempts,
                "seconds": round(now - self.started, 3),
                "last": self.last.summary if self.last else None}
