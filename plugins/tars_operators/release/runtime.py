"""What every release task needs at run time: the app spec, the run's plan and stage states."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tars_operators.config.spec import AppSpec
from tars_operators.plan.ramp import ReleasePlan
from tars_operators.plan.tasks import host_index, task_items
from tars_operators.release.machine import PREPARE, HostTasks, StageOutcome, release_id, split_hosts

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.types import RuntimeTaskInstanceProtocol as TaskInstance

# A host task the scheduler never started because its stage's entry (enter, queue picker, or the
# approval before it) failed: the host was not touched, so it is neither done nor failed.
NOT_STARTED = "upstream_failed"


@lru_cache(maxsize=64)
def _load(path: str, defaults: str | None, mtime: float) -> AppSpec:
    from tars_operators.config.loader import load_app

    return load_app(Path(path), defaults_path=Path(defaults) if defaults else None)


def load_spec(config_path: str, defaults_path: str | None = None) -> AppSpec:
    """The app spec, loaded once per process (the DAG file parse usually already did)."""
    mtime = os.stat(config_path).st_mtime
    return _load(config_path, defaults_path, mtime)


def run_plan(context: Context) -> ReleasePlan:
    """The plan ``prepare`` made for this run (its XCom ``plan``)."""
    return ReleasePlan.from_dict(context["ti"].xcom_pull(task_ids=PREPARE, key="plan"))


def stage_outcomes(context: Context, plan: ReleasePlan, upto: str | None = None,
                   since: str | None = None) -> list[StageOutcome]:
    """Per stage (from ``since`` to ``upto``, both included, when given), which hosts
    succeeded, failed or were left untouched (brake rollback)."""
    ti = context["ti"]
    run_id = context["dag_run"].run_id
    dag_id = context["dag_run"].dag_id
    names = list(plan.slot_names)
    if upto is not None:
        names = names[: names.index(upto) + 1]
    if since is not None:  # none when ``since`` comes after ``upto``
        names = names[names.index(since):] if since in names else []
    if not names:
        return []
    split = {s: host_tasks(context, release_id(s), plan.hosts(s)) for s in names}
    states = ti.get_task_states(
        dag_id=dag_id, run_ids=[run_id], task_ids=[t.task_id for s in names for t in split[s]]
    ).get(run_id, {})
    outcomes = []
    for stage in names:
        hosts = plan.hosts(stage)
        ok: list[str] = []
        failed: list[str] = []
        untouched: list[str] = []
        failures: dict[str, str] = {}
        for tasks in split[stage]:
            task = tasks.task_id
            items = _items(context, tasks.hosts)
            many = any(not isinstance(i, str) for i in items)
            results = _host_results(ti, task, many) if items else {}
            failures.update(pushed_failures(ti, task) if items else {})
            for host, (i, _) in host_index(items).items():
                state = states.get(f"{task}_{i}") or states.get(task)
                mine = results.get(host, {}).get("state")
                if state == NOT_STARTED:
                    untouched.append(host)
                elif many:  # one host of a multi-host task: its own result counts, once it has one
                    if mine == "failed" or (state == "failed" and mine not in ("ok", "untouched")):
                        failed.append(host)
                    elif mine in ("ok", "untouched") or state == "success":
                        (untouched if mine == "untouched" else ok).append(host)
                elif state == "failed":
                    failed.append(host)
                elif state == "success":
                    (untouched if mine == "untouched" else ok).append(host)
        order = {h: i for i, h in enumerate(hosts)}  # release order, whatever the queues
        ok, failed, untouched = (sorted(x, key=order.__getitem__) for x in (ok, failed, untouched))
        why = tuple((h, failures.get(h, "see the task log")) for h in failed)
        outcomes.append(StageOutcome(stage, hosts, tuple(ok), tuple(failed), tuple(untouched), why))
    return outcomes


def host_tasks(context: Context, base: str, hosts: tuple[str, ...] | list[str]) -> tuple[HostTasks, ...]:
    """``base``'s per-queue tasks (``release.machine.split_hosts``) with the hosts each maps
    over, by the app's hosts' queues (the spec of the task asking; one task without it)."""
    spec = task_spec(context)
    if spec is None:
        return (HostTasks(base, None, tuple(hosts)),)
    return split_hosts(base, hosts, spec.queue_of, spec.queues)


def task_spec(context: Context) -> AppSpec | None:
    """The app spec of the running Tars task (every one carries its ``config_path``)."""
    task = context.get("task")
    path = getattr(task, "config_path", None)
    if not isinstance(path, str):
        return None
    return load_spec(path, getattr(task, "defaults_path", None))


def _items(context: Context, hosts: Sequence[str]) -> list[str] | list[list[str]]:
    """What one release task is mapped over (``plan.tasks.task_items``, by the app's
    ``strategy.hosts_per_task``): host names, or lists of them."""
    spec = task_spec(context)
    setting = spec.config.strategy.hosts_per_task if spec is not None else "auto"
    return task_items(setting, hosts)


def stage_task_items(context: Context, plan: ReleasePlan,
                     stage: str) -> dict[str, list[str] | list[list[str]]]:
    """Per release task of ``stage`` (one per queue): what it is mapped over."""
    return {t.task_id: _items(context, t.hosts)
            for t in host_tasks(context, release_id(stage), plan.hosts(stage))}


def flat_records(values: Any) -> list[dict[str, Any]]:
    """XCom values of host tasks as one list of records: a one-host task pushes a record, a
    multi-host task a list of them (``xcom_pull`` of one map index returns it unwrapped)."""
    if isinstance(values, dict):
        return [values]
    if isinstance(values, (list, tuple)):
        return [r for v in values for r in flat_records(v)]
    return []


def every_map(ti: TaskInstance, task_id: str, key: str) -> Any:
    """``key`` of every map index of ``task_id`` that pushed it, in one request (Airflow's XCom
    slice; a list of map indexes costs one request per index: 12 per gate at 200 hosts)."""
    return ti.xcom_pull(task_ids=task_id, key=key)


def pushed_failures(ti: TaskInstance, task_id: str) -> dict[str, str]:
    """Failure messages the host tasks of ``task_id`` pushed (key ``failure``) before failing,
    by host (a running stage's too: a host's task pushes before it ends)."""
    return {v["host"]: v["message"] for v in flat_records(every_map(ti, task_id, "failure"))
            if "host" in v}


def _host_results(ti: TaskInstance, task_id: str, many: bool = False) -> dict[str, dict[str, Any]]:
    """Each host's result, by host: a one-host task's return value, a multi-host task's
    ``host_results`` (pushed as it goes, kept when the task fails)."""
    values = every_map(ti, task_id, "host_results" if many else "return_value")
    return {str(v["host"]): v for v in flat_records(values) if "host" in v}


def touched_hosts(outcomes: list[StageOutcome]) -> list[str]:
    """Every host this run worked on (succeeded or failed half-way), in release order."""
    return [h for o in outcomes for h in o.hosts if h in o.succeeded or h in o.failed]
