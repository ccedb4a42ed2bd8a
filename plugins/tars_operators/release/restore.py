"""Undo and repair: a host on its rollback target (``release.rollback_target``), running,
healthy and back in rotation — the run's own rollback, the rollback DAG, the repair of hosts
that failed within the budget — and the rotation check the run's ends make."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import RemoteError, TarsError
from tars_operators.release.hostflow import short_reason
from tars_operators.results import StepResult
from tars_operators.tasklog import TaskLog

if TYPE_CHECKING:
    from tars_operators.hooks.lb.base import LoadBalancer
    from tars_operators.hooks.ssh import HostSession
    from tars_operators.release.leases import RunLease
    from tars_operators.release.rollback_target import RollbackTarget
    from tars_operators.steps.lease import Holder, Lease
    from tars_operators.steps.state import HostState

log_ = logging.getLogger(__name__)


def _lb(spec: AppSpec) -> LoadBalancer:
    from tars_operators.hooks.lb.provider import load_balancer_for  # the providers load late

    return load_balancer_for(spec)


@dataclass
class Restore:
    """The steps of one restore, tracking whether the host is out of rotation right now."""

    spec: AppSpec
    host: Host
    session: HostSession
    lb: LoadBalancer
    run_id: str
    log: TaskLog
    steps: list[StepResult] = field(default_factory=list)
    out: bool = False
    changed: bool = False
    current: str | None = None

    def add(self, result: StepResult) -> None:
        self.steps.append(result)
        self.log.info("%s %s: %s %s", self.host.name, result.step, result.state, result.detail)

    def run(self, state: HostState, version: str, *, undo: str | None) -> None:
        from tars_operators.errors import HealthCheckFailed
        from tars_operators.steps.activate import service_running

        self.current = state.current
        if state.current != version:
            self._activate(version, restart=False)
        elif not service_running(self.session, self.spec, self.host, version):
            self.log.info("%s: %s is current but its service is not running", self.host.name, version)
            self._activate(version, restart=True)
        else:
            try:
                self.add(self._health(version))
            except HealthCheckFailed as exc:
                self.log.warning("%s: %s is current but unhealthy (%s); restarting it",
                                 self.host.name, version, exc)
                self._activate(version, restart=True)
        if undo is not None and undo != version:
            self._mark_failed(state, undo)
        self._pull_in()

    def _activate(self, version: str, *, restart: bool) -> None:
        from tars_operators.steps.activate import activate_release
        from tars_operators.steps.traffic import pull_out

        wait_capacity(self.lb, self.spec, self.host, self.log)
        self.add(pull_out(self.lb, self.spec, self.host))
        self.out, self.changed = True, True
        self.add(activate_release(self.session, self.spec, self.host, version, self.run_id,
                                  restore=True, restart=restart))
        self.current = version
        self.add(self._health(version))

    def _health(self, version: str) -> StepResult:
        from tars_operators.steps.checks import run_checks

        return run_checks(self.session, self.spec, self.host, version, kind="health")

    def _mark_failed(self, state: HostState, version: str) -> None:
        from tars_operators.steps.activate import mark_release

        meta = state.release(version)
        if meta is not None and meta.status != "failed" and not meta.derived:
            self.add(mark_release(self.session, self.spec, self.host, version, "failed"))

    def _pull_in(self) -> None:
        from tars_operators.steps.traffic import pull_in

        self.add(pull_in(self.lb, self.spec, self.host))
        self.out = False


def rotation_word(lb: LoadBalancer, host: Host) -> str:
    """What the load balancer says about ``host``, for messages (never raises)."""
    if getattr(lb, "provider", "none") == "none":
        return "no load balancer"
    try:
        state = lb.state(host)
    except Exception as exc:  # noqa: BLE001 — a message must not hide the original error
        return f"rotation unknown: {exc}"
    return ("in rotation" if state.in_service else "OUT OF ROTATION") + f", LB: {state.describe()}"


def next_hint(spec: AppSpec, host: Host) -> str:
    return (f"Next: fix the cause, then `tars rollback {spec.name} --hosts {host.name} --reason …` "
            f"(tars_rollback__{spec.name} with hosts=[{host.name}]; its `version` param picks a "
            "good release on the host), or deploy a release to it.")


def restore_host(spec: AppSpec, host: Host, bad_version: str | None, run_id: str, *,
                 undo_run: str | None = None, target: RollbackTarget | None = None,
                 explicit: str | None = None,
                 lease: RunLease | None = None, give_back_lease: bool = False,
                 log: TaskLog = log_) -> dict[str, Any]:
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


def _restore(spec: AppSpec, host: Host, session: HostSession, lb: LoadBalancer,
             bad_version: str | None, run_id: str, started: float, *, undo_run: str | None,
             target: RollbackTarget | None,
             explicit: str | None, log: TaskLog) -> dict[str, Any]:
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


def wait_capacity(lb: LoadBalancer, spec: AppSpec, host: Host, log: TaskLog,
                  timeout: float = 120.0) -> None:
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
                  lease: RunLease | None = None, log: TaskLog = log_) -> dict[str, str]:
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


def rotation_problems(spec: AppSpec, in_rotation_before: tuple[str, ...] | list[str], *,
                      mine: Holder | None = None) -> tuple[list[str], list[str]]:
    """Hosts that were in rotation before the release and are not now, with what the LB says:
    ``(problems, elsewhere)``.

    ``mine`` (the run's lease holder): a host out of rotation that another run holds (its
    lease: two runs of the app on other hosts, or two apps on one fleet) is that run's to
    bring back and report on. It is not this run's failure, but it is named: ``elsewhere``.
    """
    from tars_operators.steps.traffic import rotation_report

    if spec.config.traffic.provider == "none" or not in_rotation_before:
        return [], []
    hosts = [spec.host(n) for n in in_rotation_before]
    with _lb(spec) as lb:
        report = rotation_report(lb, spec, hosts)
    if report.error:
        return [f"rotation unknown: {report.error}"], []
    held = _held_by_others(spec, [n for n, _ in report.not_in_rotation], mine) if mine else {}
    return ([f"{name}: {why}" for name, why in report.not_in_rotation if name not in held],
            [f"{name}: out of rotation ({why}) while {held[name].holder} holds it (phase "
             f"{held[name].phase}): that run brings it back and reports on it"
             for name, why in report.not_in_rotation if name in held])


def _held_by_others(spec: AppSpec, names: list[str], mine: Holder) -> dict[str, Lease]:
    """The hosts among ``names`` whose lease another run holds (read in parallel: many hosts
    out of rotation at a run's end, an app that fell over everywhere, must not be read one
    connect timeout after another; a host that cannot be read is not counted as held: it
    stays this run's problem)."""
    from tars_operators.release.leases import read_leases

    return {name: lease for name, lease in read_leases(spec, names).items()
            if lease is not None and lease.holder != mine}
