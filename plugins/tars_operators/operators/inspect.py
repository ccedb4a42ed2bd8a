"""``tars_inspect__<app>``: read every host's release state and its load-balancer state, change nothing.

The App view's "Refresh from hosts" starts a run; its one task reads the hosts with the same
reader as the end of a release (``release.truth.read_truth``: SSH in parallel, one LB read)
and returns one small JSON record per host, which the view shows with the time it was read.
A run of a DAG rather than SSH from the api-server: it uses the workers' connections and
queues, and each read is audited as a run.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from tars_operators.operators.base import SpecOperator
from tars_operators.release.truth import HostTruth, read_truth

if TYPE_CHECKING:
    from airflow.sdk import Context

INSPECT = "inspect"


def host_report(truth: HostTruth) -> dict[str, Any]:
    """What the App view shows of one host as read (JSON-safe, a few hundred bytes)."""
    return {
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
        read_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        truth = read_truth(spec, names, log=self.log, step=INSPECT)
        for name in names:
            self.log.info("%s: %s", name, truth[name].describe())
        unread = [n for n in names if truth[n].error]
        if unread:
            self.log.warning("%d of %d host(s) could not be read: %s", len(unread), len(names),
                             ", ".join(unread))
        return {"read_at": read_at, "hosts": [host_report(truth[n]) for n in names]}
