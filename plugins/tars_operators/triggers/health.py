"""``HealthCheckTrigger``: wait for a host's health checks in the triggerer (no worker slot).

Same evaluator as the blocking ``steps.checks.run_checks``; only the probes are async:
http via ``httpx.AsyncClient``, tcp via ``asyncio.open_connection``, command via the SSH
provider's ``SSHHookAsync`` (asyncssh) when installed, else the blocking ``HostSession`` in a
thread. Emits one event: ``{"status": "passed" | "failed", "host", "kind", "version",
"message", "seconds", "checks": [...]}``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any, AsyncIterator, Sequence

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

from tars_operators.config.schema import CommandCheck, HttpCheck, TcpCheck
from tars_operators.config.spec import AppSpec, Host
from tars_operators.hooks.http import async_client
from tars_operators.hooks.ssh import HostSession, SessionParams
from tars_operators.remote.watchdog import guarded
from tars_operators.triggers.guard import RESUME_GUARD_SECONDS, resume_guard
from tars_operators.steps.evaluator import (
    CheckProgress,
    Observation,
    ResolvedCheck,
    judge_command,
    judge_error,
    judge_http,
    judge_tcp,
    resolve_checks,
)

CLASSPATH = "tars_operators.triggers.health.HealthCheckTrigger"


class HealthCheckTrigger(BaseTrigger):
    """Runs resolved checks for one host until each passes or times out."""

    def __init__(self, *, host: str, version: str, checks: list[dict[str, Any]],
                 session: dict[str, Any] | None = None, kind: str = "health",
                 elapsed: float = 0.0):
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger is unannotated
        self.host, self.version, self.kind = host, version, kind
        self.elapsed = elapsed  # seconds the task already checked inline before deferring
        self.checks = [dict(c) for c in checks]
        self.session = dict(session) if session else None

    @classmethod
    def for_host(cls, spec: AppSpec, host: Host, version: str,
                 checks: Sequence[HttpCheck | TcpCheck | CommandCheck] | None = None, *,
                 elapsed: float = 0.0, kind: str = "health") -> HealthCheckTrigger:
        """Resolve ``checks`` (default: the app's health checks) for ``host``; ``elapsed``
        seconds already spent waiting inline are taken off every check's timeout."""
        resolved = resolve_checks(spec, host, version, spec.config.health if checks is None else checks)
        resolved = [replace(c, timeout=max(c.timeout - elapsed, 0.0)) for c in resolved]
        needs_ssh = any(c.kind == "command" for c in resolved)
        return cls(host=host.name, version=version, checks=[c.as_dict() for c in resolved], kind=kind,
                   elapsed=elapsed, session=SessionParams.for_host(spec, host).as_dict() if needs_ssh else None)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {"host": self.host, "version": self.version, "checks": self.checks,
                           "session": self.session, "kind": self.kind, "elapsed": self.elapsed}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        summaries: list[dict[str, Any]] = []
        prober = _Prober(SessionParams.from_dict(self.session) if self.session else None)
        try:
            for check in (ResolvedCheck.from_dict(c) for c in self.checks):
                progress = await _wait_for(check, prober)
                summaries.append(progress.summary(time.monotonic()))
                if progress.consecutive < check.successes:
                    await resume_guard(started, RESUME_GUARD_SECONDS)
                    yield self._event("failed", self._failure(progress), started, summaries)
                    return
        finally:
            await prober.close()
        await resume_guard(started, RESUME_GUARD_SECONDS)
        yield self._event("passed", f"{len(summaries)} {self.kind} checks passed", started, summaries)

    def _failure(self, progress: CheckProgress) -> str:
        """Why a check failed, timed over the WHOLE check (inline part + here) against the
        check's configured timeout, not the part of it left for the triggerer."""
        if not self.elapsed:
            return progress.failure_message(self.kind)
        check = progress.check
        here = time.monotonic() - progress.started
        last = progress.last.summary if progress.last else "no response"
        # A check shorter than the inline part arrives here with timeout 0: its limit is unknown.
        limit = f"{check.timeout + self.elapsed:g}s timeout" if check.timeout > 0 else "timeout"
        return (
            f"{self.kind} check {check.name!r} did not pass within its {limit} "
            f"(checked for {self.elapsed + here:.0f}s: {self.elapsed:g}s by the task, then "
            f"{here:.0f}s in the triggerer; {check.successes} consecutive successes needed); "
            f"last response: {last}"
        )

    def _event(self, status: str, message: str, started: float, checks: list[dict[str, Any]]) -> TriggerEvent:
        return TriggerEvent({"status": status, "host": self.host, "kind": self.kind,
                             "version": self.version, "message": message,
                             "seconds": round(time.monotonic() - started, 3), "checks": checks})


async def _wait_for(check: ResolvedCheck, prober: _Prober) -> CheckProgress:
    progress = CheckProgress(check, time.monotonic())
    while True:
        obs = await prober.probe(check, progress.probe_timeout(time.monotonic()))
        if progress.record(obs, time.monotonic()) != "pending":
            return progress
        await asyncio.sleep(progress.next_wait(time.monotonic()))


class _Prober:
    """Async probes; keeps one HTTP client and (for command checks) one SSH connection."""

    def __init__(self, params: SessionParams | None):
        self.params = params
        self.http = async_client()
        self._ssh: Any = None  # asyncssh connection, or a HostSession (thread fallback)

    async def probe(self, check: ResolvedCheck, budget: float) -> Observation:
        try:
            if check.kind == "http":
                response = await self.http.get(check.url, timeout=budget)
                return judge_http(check, response.status_code, response.text)
            if check.kind == "tcp":
                _, writer = await asyncio.wait_for(asyncio.open_connection(check.address, check.port), budget)
                writer.close()
                return judge_tcp(None)
            return await self._command(check, budget)
        except asyncio.TimeoutError:
            return judge_tcp("timed out") if check.kind == "tcp" else judge_error(TimeoutError("timed out"))
        except (OSError, httpx.HTTPError) as exc:
            return judge_tcp(str(exc) or type(exc).__name__) if check.kind == "tcp" else judge_error(exc)
        except Exception as exc:  # asyncssh/paramiko errors: a failed probe, not a crash
            self._ssh = None
            return judge_error(exc)

    async def _command(self, check: ResolvedCheck, budget: float) -> Observation:
        if self.params is None:
            raise ValueError("a command check needs SSH session parameters")
        try:
            import asyncssh  # noqa: F401
        except ImportError:
            return await asyncio.to_thread(self._command_in_thread, check, budget)
        if self._ssh is None:
            self._ssh = await asyncio.wait_for(self._async_connect(), self.params.connect_timeout)
        try:
            # Guarded like HostSession.run; asyncssh keeps stdin open, so the host kills the
            # command when this connection closes, or at its own deadline after a timeout here.
            result = await asyncio.wait_for(self._ssh.run(guarded(check.command, budget), check=False), budget)
        except asyncio.TimeoutError:
            return judge_command(check, None, "", f"no exit within {budget:g}s")
        return judge_command(check, result.exit_status, str(result.stdout or ""), str(result.stderr or ""))

    async def _async_connect(self) -> Any:
        from airflow.providers.ssh.hooks.ssh import SSHHookAsync

        p = self.params
        assert p is not None
        hook = SSHHookAsync(ssh_conn_id=p.conn_id, host=p.address, port=p.port, username=p.user)
        return await hook.get_conn()

    def _command_in_thread(self, check: ResolvedCheck, budget: float) -> Observation:
        assert self.params is not None
        if self._ssh is None:
            self._ssh = HostSession(self.params)
        result = self._ssh.run(check.command, step="check", timeout=budget, check=False)
        return judge_command(check, result.exit_code, result.stdout, result.stderr)

    async def close(self) -> None:
        await self.http.aclose()
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None
