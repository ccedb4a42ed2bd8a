"""What the hosts really run at the end of a run: the outcome is their truth, not task states.

Finalize, halt and the rollback report read, for every planned host, its ``current`` release
(and that release's status) over SSH and its state in the load balancer, then compare with
what the run promised. A host task that failed only because its report was lost (the
api-server was down when the finished task tried to say so) is recognised here too: its
release is current, marked good by this very run, and the host is UP.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import TarsError
from tars_operators.tasklog import TaskLog

if TYPE_CHECKING:
    from tars_operators.steps.lease import Holder

log_ = logging.getLogger(__name__)
GOOD = ("good", "adopted")  # releases a host may be left on
READ_AT_ONCE = 16  # SSH reads in parallel at the end of a run
RELEASE_PHASES = ("staging", "out of rotation", "activating", "checking", "in rotation")


@dataclass(frozen=True)
class HostTruth:
    """One host, read at the end of a run. ``error`` says what could not be read."""

    host: str
    current: str | None = None
    status: str | None = None  # of the current release: good, adopted, failed, staged, unknown
    activated_run: str | None = None  # run that activated the current release
    lb: str = ""  # the LB's words ("UP (admin ready, …)"); "" without a load balancer
    in_service: bool = True  # confirmed UP (True when there is no LB to ask)
    error: str = ""
    phase: str = ""  # where the last run's work on the host stood (its lease), "" when free
    previous_good: str | None = None  # the good (or adopted) release current before this one
    others: tuple[tuple[str, str], ...] = ()  # (version, status) of the other releases on disk

    def on(self, version: str) -> bool:
        return self.current == version and not self.error

    @property
    def good(self) -> bool:
        return self.status in GOOD and not self.error

    def finished_by(self, version: str, run_id: str) -> bool:
        """The run's chain completed here: version current, marked good by it, and UP."""
        return (self.on(version) and self.status == "good" and self.activated_run == run_id
                and self.in_service)

    def describe(self) -> str:
        if self.error:
            return f"state unknown ({self.error})"
        runs = f"runs {self.current or 'nothing Tars knows'}"
        if self.current and self.status:
            runs += f" ({self.status})"
        return runs + (f"; load balancer: {self.lb}" if self.lb else "")


def read_truth(spec: AppSpec, names: Iterable[str], *, log: TaskLog = log_,
               release_for: Holder | None = None, step: str = "verify",
               also: Callable[[Any, Host], None] | None = None) -> dict[str, HostTruth]:
    """Each host's current release (SSH, in parallel) and LB state (one read). Never raises.

    ``release_for`` (a lease ``Holder``): the run is over, give back its leases in the same
    SSH session, after the read. ``also(session, host)``: more to read in that session (it
    must not raise: its own failures are its own to record).
    """
    names = list(dict.fromkeys(names))
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(READ_AT_ONCE, len(names))) as pool:
        hosts = dict(zip(names, pool.map(
            lambda n: _read_host(spec, n, release_for, log, step, also), names)))
    lb = _read_lb(spec, names)
    out = {}
    for name in names:
        h = hosts[name]
        state = lb.get(name)
        if isinstance(state, str):
            out[name] = HostTruth(**{**h, "lb": state, "in_service": False})
        elif state is None:
            out[name] = HostTruth(**h)
        else:
            out[name] = HostTruth(**{**h, "lb": state.describe(),
                                     "in_service": state.confirmed_up or not state.known})
        if out[name].error:
            log.warning("%s: %s", name, out[name].describe())
    return out


def _read_host(spec: AppSpec, name: str, release_for: Holder | None, log: TaskLog,
               step: str, also: Callable[[Any, Host], None] | None = None) -> dict[str, Any]:
    from tars_operators.hooks.ssh import open_session
    from tars_operators.release.leases import give_back
    from tars_operators.steps.lease import queue_read_lease
    from tars_operators.steps.state import layout_for, previous_good, read_host_state

    host = spec.host(name)
    try:
        with open_session(spec, host) as session:
            lease_read = queue_read_lease(session, layout_for(spec, host))  # the same round trip
            state = read_host_state(session, layout_for(spec, host), step=step)
            lease = lease_read()
            give_back(session, spec, host, release_for, log=log)
            if also is not None:
                also(session, host)
    except TarsError as exc:
        return {"host": name, "error": _short(str(exc), name)}
    meta = state.release(state.current) if state.current else None
    extra: Mapping[str, Any] = getattr(meta, "extra", {}) or {}
    return {"host": name, "current": state.current, "status": getattr(meta, "status", None),
            "activated_run": extra.get("activated_run_id"),
            "previous_good": previous_good(state, exclude=state.current),
            "others": tuple((r.version, r.status) for r in state.releases
                            if r.version != state.current),
            "phase": f"{lease.phase} ({lease.holder})" if lease else ""}


def _read_lb(spec: AppSpec, names: list[str]) -> dict[str, Any]:
    """name → ServerState, or an error string per host when the LB cannot be read."""
    from tars_operators.hooks.lb.provider import load_balancer_for

    if spec.config.traffic.provider == "none":
        return {}
    hosts = [spec.host(n) for n in names]
    try:
        with load_balancer_for(spec) as lb:
            return dict(lb.states(hosts))
    except TarsError as exc:
        return {n: f"unreadable ({exc})" for n in names}


def _short(text: str, host: str) -> str:
    return text[len(host) + 2:] if text.startswith(f"{host}: ") else text


def problems(truth: Mapping[str, HostTruth], expect: Mapping[str, str | None]) -> list[str]:
    """One line per host that is not where the run says it should be.

    ``expect``: host → the version it must run (or None: any good release), always UP.
    """
    out = []
    for name, want in expect.items():
        t = truth.get(name)
        if t is None:
            continue
        wrong = []
        if t.error and want is None and t.in_service and t.lb:
            continue  # failed within budget, unreachable, but UP: still serving what it had
        if t.error:
            wrong.append(f"could not be read ({t.error})")
        elif want is not None and t.current != want:
            wrong.append(f"runs {t.current or 'nothing'}, not {want}")
        elif want is None and not t.good:
            wrong.append(f"runs {t.current or 'nothing'} ({t.status or 'no metadata'}), "
                         "not a known good release")
        if not t.in_service and not t.error:
            wrong.append(f"NOT IN ROTATION ({t.lb})")
        elif not t.in_service:
            wrong.append(f"load balancer: {t.lb or 'unknown'}")
        if wrong:
            out.append(f"{name}: " + "; ".join(wrong))
    return out


def repair_hint(app: str, hosts: Iterable[str]) -> str:
    """The one command that brings the named hosts back to a good release, running and UP."""
    names = ",".join(hosts)
    return (f"repair: tars rollback {app} --hosts {names} --reason '<why>' "
            f"(or trigger tars_rollback__{app} with hosts {names})")


def reconcile(spec: AppSpec, outcomes: list[Any], version: str, run_id: str, *,
              log: TaskLog = log_) -> tuple[list[Any], list[str]]:
    """Hosts whose task failed but whose chain finished (report lost) count as succeeded.

    Reads only the failed hosts; returns the corrected outcomes and the hosts moved.
    """
    from dataclasses import replace

    failed = [h for o in outcomes for h in o.failed]
    if not failed:
        return outcomes, []
    seen = read_truth(spec, failed, log=log)
    late = [h for h in failed if seen[h].finished_by(version, run_id)]
    outcomes = [replace(o, why=tuple((h, _explained(h, m, seen[h])) for h, m in o.why))
                for o in outcomes]
    if not late:
        return outcomes, []
    for h in late:
        log.warning("%s: its task failed but the host finished this run's chain (%s): "
                    "counted as done", h, seen[h].describe())
    out = [replace(o, succeeded=tuple(h for h in o.hosts if h in o.succeeded or h in late),
                   failed=tuple(h for h in o.failed if h not in late),
                   why=tuple((h, m) for h, m in o.why if h not in late)) for o in outcomes]
    return out, late


def _explained(host: str, message: str, truth: HostTruth) -> str:
    """A task that died outside Tars code left no reason: say where the host stands instead."""
    if message != "see the task log":
        return message
    # The lease's phase is the dead task's own only until an undo records its own there (a
    # rollback of the same run re-enters the lease: "restoring", "done"): name only a phase
    # a release task writes.
    where = f" in phase {truth.phase}" if truth.phase.split(" (")[0] in RELEASE_PHASES else ""
    return (f"{host}: its task died without a report{where} (see the task log); the host "
            f"{truth.describe()}")
