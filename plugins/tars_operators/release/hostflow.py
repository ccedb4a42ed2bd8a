"""The per-host chain of a release and its undo, as plain functions (no Airflow needed).

stage → pull out → activate → health → smoke → mark good → pull in → prune. On failure the
host's new release is marked failed, and the message says whether the host is out of
rotation. ``restore_host`` is the undo and the repair: the host's rollback target
(``release.rollback_target``), running, healthy and back in rotation.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import HealthCheckFailed, RemoteError, TarsError
from tars_operators.results import StepResult

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
    artifact: Any = None
    index: int = -1
    results: list[StepResult] = field(default_factory=list)
    session: Any = None  # one SSH connection for the whole chain (see ``connected``)
    lease: Any = None  # the run's ``release.leases.RunLease``; None: no lease (tools, tests)
    progress: Any = None  # called with what the host does now ("health-checking"), for the note

    @property
    def steps_done(self) -> list[str]:
        return [r.step for r in self.results]

    @property
    def out_of_rotation(self) -> bool:
        return "pull_out" in self.steps_done and "pull_in" not in self.steps_done

    @property
    def activated(self) -> bool:
        return "activate" in self.steps_done

    def add(self, result: StepResult, log: Any) -> None:
        self.results.append(result)
        log.info("%s %s: %s (%.2fs) %s", self.host.name, result.step, result.state,
                 result.seconds, result.detail)

    def results_dicts(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.results]

    def restore(self, done: list[dict[str, Any]]) -> None:
        self.results = [StepResult(**d) for d in done]

    def summary(self, state: str) -> dict[str, Any]:
        return {
            "host": self.host.name, "index": self.index, "state": state,
            "version": self.version,
            "seconds": round(sum(r.seconds for r in self.results), 3),
            "steps": [{"step": r.step, "state": r.state, "seconds": round(r.seconds, 3),
                       "detail": r.detail} for r in self.results],
        }


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


def run_until_health(job: HostJob, *, log: Any = log_) -> Pending | None:
    """Stage, pull out, activate and health-check inline; returns Pending to defer the rest."""
    from tars_operators.steps.activate import activate_release
    from tars_operators.steps.stage import stage_release
    from tars_operators.steps.traffic import check_capacity, pull_out

    from tars_operators.release.leases import phase, take

    spec, host = job.spec, job.host
    with connected(job) as session:
        # One writer per host: nothing is changed before the run holds the host's lease.
        # (Connected first: an unreachable host fails at its first step, not at the lease.)
        session.connect("stage")
        take(session, spec, host, job.lease, phase="staging", version=job.version, log=log)
        job.add(stage_release(session, spec, host, job.version, job.artifact, job.run_id), log)
        with _lb(spec) as lb:
            check_capacity(lb, spec, [host.name])
            job.add(pull_out(lb, spec, host), log)
        phase(session, spec, host, job.lease, "activating", job.version)
        job.add(activate_release(session, spec, host, job.version, job.run_id), log)
        phase(session, spec, host, job.lease, "checking", job.version)
        if job.progress is not None:
            job.progress("health-checking")
        return _health(job, session, log)


def _health(job: HostJob, session: Any, log: Any) -> Pending | None:
    from tars_operators.steps.checks import run_checks

    spec = job.spec
    checks = list(spec.config.health)
    grace = spec.config.steps.health_defer_after
    trigger_cls = _health_trigger()
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


def health_event(job: HostJob, event: Any) -> None:
    """Back from the triggerer: record the health result or raise its failure."""
    event = event or {}
    if event.get("status") != "passed":
        raise HealthCheckFailed(job.host.name, "health", str(event.get("message", event)))
    job.results.append(StepResult(job.host.name, "health", "ok", job.version,
                                  float(event.get("seconds", 0.0)), "health checks passed"))


def finish(job: HostJob, *, log: Any = log_) -> None:
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
        phase(session, spec, host, job.lease, "in rotation", job.version)
        try:
            job.add(prune_releases(session, spec, host), log)
        except TarsError as exc:  # pruning is housekeeping: never fail a good release for it
            log.warning("%s: prune failed: %s", host.name, exc)


def failure(job: HostJob, exc: BaseException, *, log: Any = log_) -> str:
    """Mark the new release failed when it was activated; say where the host stands."""
    from tars_operators.steps.activate import mark_release

    step = getattr(exc, "step", None) or _next_step(job)
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
    from tars_operators.release.machine import HOST_STEPS

    done = set(job.steps_done)
    return next((s for s in HOST_STEPS if s not in done), "unknown")


def short_reason(text: str, host: str, step: str = "") -> str:
    """``host: step: why`` → ``why`` (the message already says host and step)."""
    for prefix in (f"{host}: ", f"{step}: " if step else None):
        if prefix and text.startswith(prefix):
            text = text[len(prefix):]
    return text


def restore_host(spec: AppSpec, host: Host, bad_version: str | None, run_id: str, *,
                 undo_run: str | None = None, target: Any = None, explicit: str | None = None,
                 lease: Any = None, give_back_lease: bool = False,
                 log: Any = log_) -> dict[str, Any]:
    """``host`` on its rollback target, running, healthy and UP — or a typed error naming the
    host, where it stands and what to run next.

    The target is ``target`` (a ``RollbackTarget`` resolved by a plan) or resolved here from
    the host's state: undo ``undo_run`` / ``bad_version``, or go to ``explicit``. A host
    already on its target is still checked: a stopped or unhealthy service is restarted
    (stop + start) and checked again, and the host always ends back in rotation.

    ``lease`` (a ``RunLease``): taken before the host is read or changed; with
    ``give_back_lease`` it is released when the restore ends, whatever the outcome.
    """
    from tars_operators.hooks.ssh import open_session
    from tars_operators.release import leases

    started = time.monotonic()
    with open_session(spec, host) as session, _lb(spec) as lb:
        session.connect("rollback")
        leases.take(session, spec, host, lease, phase="restoring", log=log)
        try:
            return _restore(spec, host, session, lb, bad_version, run_id, started,
                            undo_run=undo_run, target=target, explicit=explicit, log=log)
        finally:
            if give_back_lease and lease is not None:
                leases.give_back(session, spec, host, lease.holder, log=log)


def _restore(spec: AppSpec, host: Host, session: Any, lb: Any, bad_version: str | None,
             run_id: str, started: float, *, undo_run: str | None, target: Any,
             explicit: str | None, log: Any) -> dict[str, Any]:
    from tars_operators.release.restore import Restore, next_hint, rotation_word
    from tars_operators.release.rollback_target import resolve_rollback
    from tars_operators.steps.state import layout_for, read_host_state

    state = read_host_state(session, layout_for(spec, host), step="rollback")
    chosen = target or resolve_rollback(state, undo_run=undo_run, undo_version=bad_version,
                                        explicit=explicit)
    log.info("%s", chosen.line(host.name))
    if chosen.refused or chosen.version is None:
        raise RemoteError(host.name, "rollback", f"{chosen.why}; the host is left as it is "
                          f"({rotation_word(lb, host)}). {next_hint(spec, host)}")
    restore = Restore(spec, host, session, lb, run_id, log)
    try:
        restore.run(state, chosen.version, undo=chosen.undo)
    except TarsError as exc:
        where = "OUT OF ROTATION" if restore.out else rotation_word(lb, host)
        raise RemoteError(host.name, "rollback", (
            f"could not bring the host to {chosen.version}: {short_reason(str(exc), host.name)} "
            f"— host {where}, current: {restore.current or state.describe_current()}. "
            f"{next_hint(spec, host)}")) from exc
    return {"host": host.name, "state": "restored" if restore.changed else "unchanged",
            "version": chosen.version, "from": state.current,
            "moved": state.current != chosen.version, "why": chosen.why,
            "seconds": round(time.monotonic() - started, 3),
            "steps": [s.as_dict() for s in restore.steps]}



def wait_capacity(lb: Any, spec: AppSpec, host: Host, log: Any, timeout: float = 120.0) -> None:
    """Wait (bounded) until taking ``host`` out keeps ``min_in_service``; then it may go."""
    from tars_operators.errors import CapacityError
    from tars_operators.steps.traffic import check_capacity

    deadline = time.monotonic() + timeout
    while True:
        try:
            check_capacity(lb, spec, [host.name])
            return
        except CapacityError as exc:
            if time.monotonic() > deadline:
                raise
            log.info("%s waits for capacity: %s", host.name, exc)
            time.sleep(1.0)


def repair_failed(spec: AppSpec, hosts: list[str], version: str, run_id: str, *,
                  lease: Any = None, log: Any = log_) -> dict[str, str]:
    """Hosts that failed within the budget: undo this run where it switched them, and bring
    every one of them back running, healthy and in rotation."""
    out = {}
    for name in hosts:
        try:
            r = restore_host(spec, spec.host(name), version, run_id, undo_run=run_id,
                             lease=lease, log=log)
            how = "restored to" if r["moved"] else "kept on"
            out[name] = f"{how} {r['version']}, in rotation"
        except TarsError as exc:
            out[name] = f"NOT repaired: {short_reason(str(exc), name, 'rollback')}"
            log.error("%s: repair failed: %s", name, exc)
    return out


def rotation_problems(spec: AppSpec, in_rotation_before: tuple[str, ...] | list[str]) -> list[str]:
    """Hosts that were in rotation before the release and are not now, with what the LB says."""
    from tars_operators.steps.traffic import rotation_report

    if spec.config.traffic.provider == "none" or not in_rotation_before:
        return []
    hosts = [spec.host(n) for n in in_rotation_before]
    with _lb(spec) as lb:
        report = rotation_report(lb, spec, hosts)
    if report.error:
        return [f"rotation unknown: {report.error}"]
    return [f"{name}: {why}" for name, why in report.not_in_rotation]
