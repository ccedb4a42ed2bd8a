"""Health checks (wait for N consecutive successes) and smoke tests (once each), blocking.

Smoke follows ``steps.smoke``: its ``timeout`` bounds all the smoke tests together and its
``retries`` runs them all again after a failure. Health has no step policy: each check's own
``timeout``, ``interval`` and ``successes`` already say how long and how often it is tried.

The async twin is ``triggers.health.HealthCheckTrigger``; both use ``steps.evaluator``.
"""

from __future__ import annotations

import socket
import time
from typing import Literal, Sequence

import httpx

from tars_operators.config.schema import CommandCheck, HttpCheck, TcpCheck
from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import HealthCheckFailed, RemoteCommandError, RemoteError
from tars_operators.hooks.http import client as http_client
from tars_operators.hooks.ssh import HostSession
from tars_operators.remote.validate import validate_version
from tars_operators.results import StepResult
from tars_operators.steps.policy import Deadline, with_retries
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

Kind = Literal["health", "smoke"]


def probe(check: ResolvedCheck, session: HostSession | None, budget: float,
          http: httpx.Client | None = None) -> Observation:
    """One attempt of ``check`` within ``budget`` seconds."""
    if http is None and check.kind == "http":
        with http_client() as own:
            return probe(check, session, budget, own)
    try:
        if check.kind == "http":
            assert http is not None
            response = http.get(check.url, timeout=budget)
            return judge_http(check, response.status_code, response.text)
        if check.kind == "tcp":
            with socket.create_connection((check.address, check.port), timeout=budget):
                return judge_tcp(None)
        if session is None:
            raise ValueError("a command check needs an SSH session")
        result = session.run(check.command, step="check", timeout=budget, check=False,
                             label=f"check {check.name}")
        return judge_command(check, result.exit_code, result.stdout, result.stderr)
    except RemoteCommandError as exc:  # only raised here for a timeout (check=False)
        return judge_command(check, None, "", str(exc))
    except RemoteError as exc:
        return judge_error(exc)
    except (OSError, httpx.HTTPError) as exc:
        return judge_tcp(str(exc) or type(exc).__name__) if check.kind == "tcp" else judge_error(exc)


def wait_for(check: ResolvedCheck, session: HostSession | None, host: str, kind: Kind,
             http: httpx.Client | None = None) -> dict[str, object]:
    """Probe every ``interval`` until ``successes`` in a row; HealthCheckFailed at the deadline."""
    progress = CheckProgress(check, time.monotonic())
    while True:
        now = time.monotonic()
        obs = probe(check, session, progress.probe_timeout(now), http)
        verdict = progress.record(obs, time.monotonic())
        if verdict == "passed":
            return progress.summary(time.monotonic())
        if verdict == "timed_out":
            raise HealthCheckFailed(host, kind, progress.failure_message(kind))
        time.sleep(progress.next_wait(time.monotonic()))


def run_checks(
    session: HostSession | None, spec: AppSpec, host: Host, version: str,
    checks: Sequence[HttpCheck | TcpCheck | CommandCheck] | None = None, *, kind: Kind = "health",
) -> StepResult:
    """Health: every check until it passes (in order). Smoke: every check once, output kept
    (again ``steps.smoke.retries`` times after a failure)."""
    started = time.monotonic()
    validate_version(version, spec.config.artifact.version_pattern)
    if checks is None:
        checks = spec.config.health if kind == "health" else spec.config.smoke
    resolved = resolve_checks(spec, host, version, checks)
    if not resolved:
        return StepResult(host.name, kind, "skipped", version, 0.0, f"no {kind} checks configured")
    with http_client() as http:
        if kind == "smoke":
            return with_retries(spec, host.name, "smoke", lambda _: _smoke(
                resolved, session, host, version, http, Deadline(spec, "smoke")))
        summaries = [wait_for(check, session, host.name, kind, http) for check in resolved]
    return StepResult(host.name, kind, "ok", version, time.monotonic() - started,
                      f"{len(resolved)} {kind} checks passed", {"checks": summaries})


def _smoke(resolved: list[ResolvedCheck], session: HostSession | None, host: Host, version: str,
           http: httpx.Client, deadline: Deadline) -> StepResult:
    started = time.monotonic()
    outputs: list[dict[str, object]] = []
    for check in resolved:
        if deadline.left() == 0:
            outputs.append({"name": check.name, "ok": False,
                            "output": f"not run: {deadline.setting()} is up"})
            continue
        budget = deadline.cap(check.attempt_timeout)
        obs = probe(check, session, budget, http)
        if not obs.ok and deadline.left() == 0:
            obs = Observation(False, f"{obs.summary} ({deadline.setting()} is up)")
        outputs.append({"name": check.name, "ok": obs.ok, "output": obs.summary})
    failed = [o for o in outputs if not o["ok"]]
    if failed:
        shown = "; ".join(f"{o['name']!r}: {o['output']}" for o in failed)
        error = HealthCheckFailed(host.name, "smoke", f"{len(failed)} of {len(outputs)} smoke tests failed: {shown}")
        error.outputs = outputs  # type: ignore[attr-defined]
        raise error
    return StepResult(host.name, "smoke", "ok", version, time.monotonic() - started,
                      f"{len(outputs)} smoke tests passed", {"checks": outputs})
