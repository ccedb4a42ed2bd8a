"""What a rollback's host tasks map over: ``rollback.hosts`` (a release's own rollback) and the
rollback DAG's ``restore``.

The same rule as a stage's release task (``plan.tasks.task_items`` with the app's
``strategy.hosts_per_task``): a host name per task instance while there are few, lists of
names when there are many, so no rollback needs more than Airflow's 1,024 mapped instances.
The rollback DAG maps with ``expand_kwargs``: a one-host item is ``{"host": name, "target":
{…}}`` as before, a chunk ``{"host": [names], "target": {name: {…}}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tars_operators.plan.tasks import HostsPerTask, task_items

Kwargs = dict[str, Any]
Item = str | list[str] | Kwargs


def item_hosts(item: Any) -> list[str]:
    """The host names of one item: a name, a list of names, or restore keyword arguments."""
    if isinstance(item, dict):
        return item_hosts(item.get("host"))
    if isinstance(item, str):
        return [item]
    if isinstance(item, (list, tuple)):
        return [str(h) for h in item]
    return []


def flat_hosts(items: Any) -> list[str]:
    """Every host name of a list of items, in order (what the rollback touches)."""
    return [h for i in (items or []) for h in item_hosts(i)]


def rollback_items(setting: HostsPerTask, items: Sequence[Any]) -> list[Any]:
    """``items`` (host names, or one-host restore kwargs) as the rollback task maps over them:
    unchanged when each task keeps one host, else grouped by ``plan.tasks.task_items``."""
    if any(isinstance(i, dict) for i in items):
        return restore_kwargs(setting, items)
    return list(task_items(setting, [str(i) for i in items]))


def restore_kwargs(setting: HostsPerTask, items: Sequence[Kwargs]) -> list[Kwargs]:
    """One-host restore kwargs grouped as ``task_items`` groups their hosts: a chunk carries
    its hosts' names and each one's target by name."""
    names = [str(i["host"]) for i in items]
    targets = {str(i["host"]): i.get("target") for i in items}
    grouped = task_items(setting, names)
    if all(isinstance(g, str) for g in grouped):
        return [dict(i) for i in items]
    return [{"host": list(g), "target": {h: targets[h] for h in g}} for g in grouped]
