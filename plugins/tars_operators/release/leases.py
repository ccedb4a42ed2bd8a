"""How release and rollback tasks use host leases (``steps.lease``): one writer per host.

A run takes a host's lease before it changes the host and keeps it until the run ends:
finalize, halt and the rollback report give back the leases of every host the run planned;
the rollback DAG gives each host back when its restore ends. A run is "active" while
Airflow has it queued or running; the lease of a run that is not is taken over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import TarsError
from tars_operators.steps.lease import Holder
from tars_operators.tasklog import TaskLog

if TYPE_CHECKING:
    from airflow.sdk import Context

    from tars_operators.hooks.ssh import HostSession
    from tars_operators.remote.lease import Phase

log_ = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunLease:
    """The run's identity on hosts, how to tell whether another holder is alive, how long to wait."""

    holder: Holder
    is_active: Callable[[Holder], bool]
    wait: float

    @classmethod
    def from_context(cls, context: Context, spec: AppSpec) -> RunLease:
        from tars_operators.steps.lease import active_runs

        return cls(run_holder(context), active_runs(context["ti"]), spec.config.steps.lease_wait)


def run_holder(context: Context) -> Holder:
    """The run's identity on hosts (its leases are given back under it when it ends)."""
    dr = context["dag_run"]
    return Holder(dr.dag_id, dr.run_id)


def take(session: HostSession, spec: AppSpec, host: Host, lease: RunLease | None, *, phase: Phase,
         version: str = "", target: str = "", log: TaskLog = log_) -> None:
    """Acquire (or re-enter) the host's lease for the run; LeaseHeld after ``wait``."""
    from tars_operators.steps.lease import acquire
    from tars_operators.steps.state import layout_for

    if lease is None:
        return
    got = acquire(session, layout_for(spec, host), lease.holder, phase=phase, version=version,
                  target=target, is_active=lease.is_active, wait=lease.wait,
                  log=lambda line: log.info("%s", line))
    if got.took_over and got.previous is not None:
        log.warning("%s: took over the lease of %s, which is no longer active; it left the host "
                    "in phase %r", host.name, got.previous.holder, got.previous.phase)


def phase(session: HostSession, spec: AppSpec, host: Host, lease: RunLease | None, name: Phase,
          version: str | None = None, *, ahead: bool = False) -> None:
    """Record where the run's work on the host stands (refused if the run lost the lease).

    ``ahead``: in the round trip of the session's next command, which runs only once the
    phase is recorded (for a step whose first act is a command on the host).
    """
    from tars_operators.steps.lease import queue_phase, set_phase
    from tars_operators.steps.state import layout_for

    if lease is not None:
        (queue_phase if ahead else set_phase)(session, layout_for(spec, host), lease.holder, name,
                                              version)


def give_back(session: HostSession, spec: AppSpec, host: Host, holder: Holder | None, *,
              log: TaskLog = log_) -> None:
    """Release the run's lease on the host if it still has it; never raises."""
    from tars_operators.steps.lease import release
    from tars_operators.steps.state import layout_for

    if holder is None:
        return
    try:
        release(session, layout_for(spec, host), holder)
    except TarsError as exc:
        log.warning("%s: lease of %s not released: %s", host.name, holder, exc)


def read_leases(spec: AppSpec, names: list[str], *, log: TaskLog = log_) -> dict[str, Any]:
    """Each named host's lease (a ``steps.lease.Lease``, or None when it has none or cannot be
    read: logged), read over SSH in parallel, as many at once as the truth read."""
    from concurrent.futures import ThreadPoolExecutor

    from tars_operators.hooks.ssh import open_session
    from tars_operators.release.truth import READ_AT_ONCE
    from tars_operators.steps.lease import read_lease
    from tars_operators.steps.state import layout_for

    def lease_of(name: str) -> Any:
        host = spec.host(name)
        try:
            with open_session(spec, host) as session:
                return read_lease(session, layout_for(spec, host))
        except TarsError as exc:
            log.warning("%s: lease not readable (%s)", name, exc)
            return None

    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(READ_AT_ONCE, len(names))) as pool:
        return dict(zip(names, pool.map(lease_of, names)))


def wait_until_free(spec: AppSpec, names: list[str], lease: RunLease, *, log: TaskLog = log_,
                    poll: float = 2.0) -> None:
    """Wait (up to ``lease.wait``) until no other active run holds any of these hosts.

    A plan that resolves per-host targets (the rollback DAG) must not read hosts another run
    is changing: its answer would be stale by the time it acts. Raises LeaseHeld naming the
    holder when the wait runs out.
    """
    import time

    from tars_operators.errors import LeaseHeld

    deadline = time.monotonic() + lease.wait
    said = False
    while True:
        held = [(n, got) for n, got in read_leases(spec, names, log=log).items()
                if got is not None and got.holder != lease.holder]
        busy = [(n, got) for n, got in held if lease.is_active(got.holder)]
        if not busy:
            return
        name, got = busy[0]
        if time.monotonic() >= deadline:
            raise LeaseHeld(name, "lease", f"held by {got.describe()} (and {len(busy) - 1} more "
                            f"host(s)); waited {lease.wait:g} s (steps.lease_wait). Let that run "
                            "finish or stop it, then run this again", holder=str(got.holder),
                            phase=got.phase)
        if not said:
            log.warning("waiting for %d host(s) held by another run, e.g. %s: %s", len(busy),
                        name, got.describe())
            said = True
        time.sleep(poll)
