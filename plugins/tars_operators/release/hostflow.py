"""The per-host chain of a release, as plain functions (no Airflow needed).

stage → pull out → activate → health → smoke → mark good → pull in → prune. Each step that
succeeds moves the host's ``machine.HostTrack`` (pending → staged → out of rotation → active →
healthy → in rotation); a failure moves it to failed. On failure the host's new release is
marked failed, and the message says whether the host is out of rotation. The undo and the
repair are in ``release.restore``.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import HealthCheckFailed, LeaseHeld, LeaseLost, TarsError
from tars_operators.release.machine import HOST_STEPS, HostPhase, HostTrack
from tars_operators.results import StepResult
from tars_operators.tasklog import TaskLog

if TYPE_CHECKING:
    from tars_operators.hooks.artifacts import FetchedArtifact
    from tars_operators.hooks.ssh import HostSession
    from tars_operators.release.leases import RunLease

log_ = logging.getLogger(__name__)


class StepFailed(TarsError):
    """A host step failed; the message is the whole story (host, step, why, where it is)."""


@dataclass
class Pending:
    """The health wait continues in the triggerer."""

    trigger: Any


@dataclass
class HostJob:
    spec: AppSpec
    host: Host
    version: str
    run_id: str
    artifact: FetchedArtifact | None = None
    index: int = -1
    results: list[StepResult] = field(default_factory=list)
    session: HostSession | None = None  # one SSH connection for the whole chain (see ``connected``)
    lease: RunLease | None = None  # None: no lease (tools, tests)
    # Called with what the host does now ("health-checking"), for the run note.
    progress: Callable[[str], None] | None = None
    track: HostTrack = field(init=False)

    def __post_init__(self) -> None:
        self.track = HostTrack(self.host.name)

    @property
    def steps_done(self) -> list[str]:
        return [r.step for r in self.results]

    @property
    def out_of_rotation(self) -> bool:
        return "pull_out" in self.steps_done and "pull_in" not in self.steps_done

    @property
    def activated(self) -> bool:
        return "activate" in self.steps_done

    def add(self, result: StepResult, log: TaskLog) -> None:
        """A step succeeded: keep its result and move the host to the phase it leads to."""
        self.results.append(result)
        self.track.after_step(result.step)
        log.info("%s %s: %s (%.2fs) %s", self.host.name, result.step, result.state,
                 result.seconds, result.detail)

    def results_dicts(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.results]

    def restore(self, done: list[dict[str, Any]]) -> None:
        """Resume after a deferral: the steps done so far, and the phases they led through."""
        self.results = [StepResult(**d) for d in done]
        self.track = HostTrack.replay(self.host.name, self.steps_done)

    def summary(self, state: str) -> dict[str, Any]:
        """The host task's result (XCom): what the views and a resumed run read."""
        return {
            "host": self.host.name, "index": self.index, "state": state,
            "version": self.version, "phase": self.track.phase.value,
            "phases": self.track.as_list(),
            "seconds": round(sum(r.seconds for r in self.results), 3),
            "steps": [{"step": r.step, "state": r.state, "seconds": round(r.seconds, 3),
                       "detail": r.detail} for r in self.results],
        }

    def failure_record(self, message: str) -> dict[str, Any]:
        """What a failed host task leaves (XCom ``failure``) for gates, reports and views."""
        return {"host": self.host.name, "message": message, "phase": self.track.phase.value,
                "phases": self.track.as_list()}


def untouched(host: str, index: int, why: str) -> dict[str, Any]:
    """The result of a host task that left its host alone (a brake asked for rollback)."""
    track = HostTrack(host)
    track.to(HostPhase.UNTOUCHED)
    return {"host": host, "index": index, "state": "untouched", "phase": track.phase.value,
            "phases": track.as_list(), "detail": why, "steps": []}


@contextmanager
def connected(job: HostJob) -> Iterator[Any]:
    """Keep one SSH session open for the steps run inside (saves a login per step)."""
    from tars_operators.hooks.ssh import open_session

    if job.session is not None:
        yield job.session
        return
    with open_session(job.spec, job.host) as session:
        job.session = session
        try:
            yield session
        finally:
            job.session = None


def _lb(spec: AppSpec) -> Any:
    from tars_operators.hooks.lb.provider import load_balancer_for

    return load_balancer_for(spec)


def run_until_health(job: HostJob, *, log: TaskLog = log_, defer: bool = True) -> Pending | None:
    """Stage, pull out, activate and health-check inline; returns Pending to defer the rest
    (never with ``defer=False``: a task working on several hosts waits for health inline)."""
    from tars_operators.steps.activate import activate_release
    from tars_operators.steps.stage import stage_release
    from tars_operators.steps.traffic import check_capacity, pull_out

    from tars_operators.assembly.preflight import recheck
    from tars_operators.release.leases import phase, take

    spec, host = job.spec, job.host
    with connected(job) as session:
        # One writer per host: nothing is changed before the run holds the host's lease.
        # (Connected first: an unreachable host fails at its first step, not at the lease.)
        session.connect("stage")
        # Requirements again, cheaply, before the lease and pull-out: a host that lost one
        # since preflight fails here, still in rotation (assembly/preflight.py).
        recheck(session, spec, host, artifact_bytes=job.artifact.size if job.artifact else None)
        take(session, spec, host, job.lease, phase="staging", version=job.version, log=log)
        job.add(stage_release(session, spec, host, job.version, job.artifact, job.run_id), log)
        with _lb(spec) as lb:
            check_capacity(lb, spec, [host.name])
            job.add(pull_out(lb, spec, host), log)
        # Sent with activate's first command (it reads the host's state before the switch).
        phase(session, spec, host, job.lease, "activating", job.version, ahead=True)
        job.add(activate_release(session, spec, host, job.version, job.run_id), log)
        phase(session, spec, host, job.lease, "checking", job.version)
        if job.progress is not None:
            job.progress("health-checking")
        return _health(job, session, log, defer)


def _health(job: HostJob, session: HostSession, log: TaskLog, defer: bool = True) -> Pending | None:
    from tars_operators.steps.checks import run_checks

    spec = job.spec
    checks = list(spec.config.health)
    grace = spec.config.steps.health_defer_after
    trigger_cls = _health_trigger() if defer else None
    longest = max((c.timeout for c in checks), default=0.0)
    if trigger_cls is None or longest <= grace or not checks:
        job.add(run_checks(session, spec, job.host, job.version, checks, kind="health"), log)
        return None
    capped = [c.model_copy(update={"timeout": min(c.timeout, grace)}) for c in checks]
    try:
        job.add(run_checks(session, spec, job.host, job.version, capped, kind="health"), log)
        return None
    except HealthCheckFailed as exc:
        log.info("%s: not healthy after %.0fs inline (%s); waiting in the triggerer",
                 job.host.name, grace, exc)
    return Pending(trigger_cls.for_host(spec, job.host, job.version, checks, elapsed=grace))


def _health_trigger() -> Any:
    try:
        from tars_operators.triggers.health import HealthCheckTrigger
    except ImportError:
        return None
    return HealthCheckTrigger if hasattr(HealthCheckTrigger, "for_host") else None


def health_event(job: HostJob, event: Any, *, log: TaskLog = log_) -> None:
    """Back from the triggerer: record the health result or raise its failure."""
    event = event or {}
    if event.get("status") != "passed":
        raise HealthCheckFailed(job.host.name, "health", str(event.get("message", event)))
    job.add(StepResult(job.host.name, "health", "ok", job.version,
                       float(event.get("seconds", 0.0)),
                       "health checks passed (waited in the triggerer)"), log)


def finish(job: HostJob, *, log: TaskLog = log_) -> None:
    """Smoke, mark good, pull back in (verified), prune old releases."""
    from tars_operators.steps.activate import mark_release, prune_releases
    from tars_operators.steps.checks import run_checks
    from tars_operators.steps.traffic import pull_in

    from tars_operators.release.leases import phase

    spec, host = job.spec, job.host
    with connected(job) as session:
        job.add(run_checks(session, spec, host, job.version, kind="smoke"), log)
        job.add(mark_release(session, spec, host, job.version, "good"), log)
        with _lb(spec) as lb:
            job.add(pull_in(lb, spec, host), log)
        # Sent with prune's first command (it reads the host's state before removing any).
        phase(session, spec, host, job.lease, "in rotation", job.version, ahead=True)
        try:
            job.add(prune_releases(session, spec, host), log)
        except (LeaseHeld, LeaseLost):  # the phase was refused: the run lost the host
            raise
        except TarsError as exc:  # pruning is housekeeping: never fail a good release for it
            log.warning("%s: %s failed: %s", host.name, getattr(exc, "step", "prune"), exc)


def failure(job: HostJob, exc: BaseException, *, log: TaskLog = log_) -> str:
    """Mark the new release failed when it was activated; say where the host stands."""
    from tars_operators.steps.activate import mark_release

    step = getattr(exc, "step", None) or _next_step(job)
    job.track.to(HostPhase.FAILED)
    if job.activated:
        try:
            with connected(job) as session:
                mark_release(session, job.spec, job.host, job.version, "failed")
        except TarsError as mark_exc:
            log.warning("%s: could not mark %s failed: %s", job.host.name, job.version, mark_exc)
    where = ("OUT OF ROTATION until rollback or repair" if job.out_of_rotation
             else "still in rotation on its previous release")
    message = f"{job.host.name} failed@{step}: {short_reason(str(exc), job.host.name, step)} — host {where}"
    log.error(message)
    return message


def _next_step(job: HostJob) -> str:
    done = set(job.steps_done)
    return next((s for s in HOST_STEPS if s not in done), "unknown")


def short_reason(text: str, host: str, step: str = "") -> str:
    """``host: step: why`` → ``why`` (the message already says host and step)."""
    for prefix in (f"{host}: ", f"{step}: " if step else None):
        if prefix and text.startswith(prefix):
            text = text[len(prefix):]
    return text
