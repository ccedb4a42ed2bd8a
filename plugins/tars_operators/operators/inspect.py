"""``tars_inspect__<app>``: read every host's release state and its load-balancer state, change nothing.

The App view's "Refresh from hosts" starts a run; its one task reads the hosts with the same
reader as the end of a release (``release.truth.read_truth``: SSH in parallel, one LB read)
and returns one small JSON record per host, which the view shows with the time it was read.
In the same SSH session it checks the host's ``runtime.requires`` (preflight's check, without
the write probe: a refresh creates nothing) for the view's Ready column.
A run of a DAG rather than SSH from the api-server: it uses the workers' connections and
queues, and each read is audited as a run.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from tars_operators.assembly.requirements import Readiness
from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import TarsError
from tars_operators.operators.base import SpecOperator
from tars_operators.release.truth import HostTruth, read_truth

if TYPE_CHECKING:
    from airflow.sdk import Context

    from tars_operators.tasklog import TaskLog

INSPECT = "inspect"


def host_report(truth: HostTruth, readiness: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the App view shows of one host as read (JSON-safe, a few hundred bytes);
    ``readiness`` (``preflight.readiness_entry``) only for a host with requirements."""
    return {**({"readiness": readiness} if readiness is not None else {}),
        "host": truth.host, "version": truth.current, "status": truth.status,
        "previous_good": truth.previous_good,
        "releases": [{"version": v, "status": s} for v, s in truth.others],
        "lb": truth.lb, "in_service": truth.in_service, "phase": truth.phase,
        "error": truth.error,
    }


class InspectHostsOperator(SpecOperator):
    """Read every host of the app (release state over SSH, state in the LB); never changes one.

    With the app's hosts on several queues (``airflow.queue``) there is one such task per
    queue, each reading that queue's hosts (``host_queue``) from a worker that reaches them.
    """

    ui_color = "#e8f0fe"

    def __init__(self, *, host_queue: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.host_queue = host_queue

    def execute(self, context: Context) -> dict[str, Any]:
        spec = self.spec
        several = len(spec.queues) > 1
        names = [h.name for h in spec.hosts if not several or h.queue == self.host_queue]
        return inspect_hosts(spec, names, log=self.log)


def inspect_hosts(spec: AppSpec, names: list[str], *, log: TaskLog) -> dict[str, Any]:
    """The task's result: ``{"read_at": iso, "hosts": [host_report, …]}``; never raises."""
    from tars_operators.assembly.preflight import needs_checks, readiness_entry

    read_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    ready: dict[str, Readiness] = {}
    truth = read_truth(spec, names, log=log, step=INSPECT, also=_readiness_into(spec, ready))
    for name in names:
        log.info("%s: %s", name, truth[name].describe())
        if name in ready:
            log.info("%s: %s", name, ready[name].describe())
    unread = [n for n in names if truth[n].error]
    if unread:
        log.warning("%d of %d host(s) could not be read: %s", len(unread), len(names),
                    ", ".join(unread))
    reports = []
    for n in names:
        # A host that could not be read was not checked either: its readiness is unknown.
        found = ready.get(n) or Readiness(n, error=truth[n].error or "not checked")
        wanted = needs_checks(spec, [n])
        reports.append(host_report(truth[n], readiness_entry(found) if wanted else None))
    return {"read_at": read_at, "hosts": reports}


def _readiness_into(spec: AppSpec, ready: dict[str, Readiness]) -> Callable[[Any, Host], None]:
    """``read_truth``'s ``also``: check the host's requirements in its open session."""
    from tars_operators.assembly.preflight import check_session, needs_checks

    def check(session: Any, host: Host) -> None:
        if not needs_checks(spec, [host.name]):
            return
        try:
            ready[host.name] = check_session(session, spec, host, write_probe=False)
        except TarsError as exc:  # the read stands; only the readiness is unknown
            ready[host.name] = Readiness(host.name, error=str(exc).removeprefix(f"{host.name}: "))

    return check
