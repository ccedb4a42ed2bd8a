"""With the app's hosts on several queues (``airflow.queue``): one queue's share of a list.

Airflow sets a task's ``queue`` for all its map indexes and maps only over a task's return
value, so each queue's host task (release, rollback, restore) maps over what this small task
returns: the items of ``source``'s list whose host runs on ``host_queue``. It runs on the
default queue (it touches no host).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tars_operators.operators.base import SpecOperator
from tars_operators.release.machine import split_hosts

if TYPE_CHECKING:
    from airflow.sdk import Context


class QueueHostsOperator(SpecOperator):
    """The items of ``source``'s return value for the hosts of ``host_queue`` (None: the
    default queue), in the source's order; ``stage`` set: that stage's release task items."""

    ui_color = "#f1f3f4"

    def __init__(self, *, source: str, base: str, host_queue: str | None,
                 stage: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.source = source
        self.base = base
        self.host_queue = host_queue
        self.stage = stage

    def execute(self, context: Context) -> list[Any]:
        spec = self.spec
        if self.stage is not None:
            from tars_operators.release.runtime import run_plan, stage_task_items

            mine = stage_task_items(context, run_plan(context), self.stage)
            task_id = next(t.task_id for t in split_hosts(self.base, [], {}, spec.queues)
                           if t.queue == self.host_queue)
            items: list[Any] = list(mine.get(task_id, []))
        else:
            source = context["ti"].xcom_pull(task_ids=self.source) or []
            names = [_host(i) for i in source]
            split = split_hosts(self.base, names, spec.queue_of, spec.queues)
            hosts = next((set(t.hosts) for t in split if t.queue == self.host_queue), set())
            # the rollback's rule for its share (one host per task, or chunks of hosts):
            # chunked per queue, a task never mixes queues
            from tars_operators.plan.rollback_items import rollback_items

            items = rollback_items(spec.config.strategy.hosts_per_task,
                                   [i for i in source if _host(i) in hosts])
        self.log.info("queue %s: %d item(s) for %s", self.host_queue or "default", len(items),
                      self.base)
        return items


def _host(item: Any) -> str:
    """A host name, or the ``host`` of a restore's keyword arguments."""
    return str(item["host"]) if isinstance(item, dict) else str(item)
