"""Build the deploy DAG of one app. The topology comes from ``release.machine.topology``.

```
prepare ─► fetch ─► fort.enter ─► fort.release[host…] ─► fort.gate ─► [bake] ─► [approve] ─► batch_1.enter …
   └─► dry_run  └─► abort (only when prepare/fetch failed: fails the run)
                                                 │                              │
                       rollback.plan ◄───────────┴── (any gate / approval) ─────┘ ─► halt
                       rollback.hosts[host…] ─► rollback.report (fails the run)      finalize
```
A stage's entry runs no worker (the scheduler marks it), unless it reads the LB's counters
for canary analysis after a bake or approval; its release maps over what fetch or the previous
gate returned (``_stage``), so a stage's hosts start one scheduler pass after the gate before.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, TaskGroup, TriggerRule
from airflow.sdk.definitions.param import ParamsDict

from tars_operators.config.spec import AppSpec
from tars_operators.factory.doc import plan_doc
from tars_operators.factory.params import build_params
from tars_operators.release import machine as m
from tars_operators.release.analysis import approval_stages, bake_in_gate

START = datetime(2024, 1, 1, tzinfo=timezone.utc)
# Mapped host tasks show the host name in the UI, not an index; a task of several hosts
# (strategy.hosts_per_task) shows its first and last and how many.
HOSTS_LABEL = ("{{ task.host if task.host is string else task.host[0] ~ ' … ' ~ task.host[-1]"
               " ~ ' (' ~ (task.host | length) ~ ' hosts)' }}")


def stage_slots(spec: AppSpec) -> list[str]:
    """The stage slots of the DAG: the stages of the app's default plan."""
    return list(spec.default_plan.stage_names)


# The run's own decisions and ends (stage entries, queue pickers, gates, finalize, halt, the
# rollback's plan and report) read state and decide again the same way: an unexpected error
# there (the execution API timing out under load, a worker lost) is retried, so a run is not
# left without a decision or a report. Deliberate failures (AirflowFailException) are not.
# Host tasks keep ``steps.host_retries``; prepare and fetch none (they report their own).
CONTROL_RETRIES: dict[str, Any] = {"retries": 2, "retry_delay": timedelta(seconds=3)}


def task_paths(spec: AppSpec, defaults_path: Path | None) -> dict[str, Any]:
    """The config files every Tars task re-reads at run time."""
    return {"config_path": str(spec.source),
            "defaults_path": str(defaults_path) if defaults_path else None}


def manual_dag(spec: AppSpec, kind: str) -> dict[str, Any]:
    """DAG arguments of the app's manual companions (``tars_<kind>__<app>``): no schedule,
    one run at a time, no task retries."""
    c = spec.config
    return {"dag_id": f"tars_{kind}__{spec.name}", "schedule": None, "start_date": START,
            "catchup": False, "max_active_runs": 1, "tags": ["tars", kind, *c.app.tags],
            "default_args": {"owner": c.app.owner, "retries": 0},
            "is_paused_upon_creation": c.airflow.paused_on_creation}


def build_dag(spec: AppSpec, *, defaults_path: Path | None = None, canary: bool = False) -> DAG:
    """``tars_deploy__<app>`` (or, with ``canary``, ``tars_canary__<app>``: the fort stage only)."""
    from tars_operators.operators.announce import ANNOUNCE, AnnounceOperator
    from tars_operators.operators.finalize import AbortOperator, DryRunOperator
    from tars_operators.operators.prepare import PrepareOperator
    from tars_operators.operators.release_host import FetchOperator

    c = spec.config
    slots = stage_slots(spec)
    if canary:
        slots = [s for s in slots if s == "fort"][:1] or slots[:1]
    approval_after = approval_stages(c, slots)  # strategy.approval.after + analysis's own
    nodes = m.topology(slots, approval_after, bake=c.strategy.bake_seconds > 0)
    # An analysed stage's bake is its analysis window, watched by its gate: no bake task.
    nodes = [replace(n, after_gate=tuple(t for t in n.after_gate if t != m.bake_id(n.stage)))
             if bake_in_gate(c, n.stage) else n for n in nodes]
    if _canary_approval(spec, canary):
        nodes = [CanaryNode(**vars(nodes[0]), approve=m.approve_id(slots[0]))]
    common = task_paths(spec, defaults_path)
    with DAG(
        dag_id=f"tars_canary__{spec.name}" if canary else spec.dag_id,
        description=c.app.description or f"Release {spec.name}",
        schedule=_schedule(spec) if canary else None,
        start_date=START, catchup=False, max_active_runs=1,
        max_active_tasks=c.airflow.max_active_tasks,
        is_paused_upon_creation=c.airflow.paused_on_creation,
        tags=["tars", *c.app.tags] + (["canary"] if canary else []),
        default_args={"owner": c.app.owner, "retries": 0},
        doc_md=plan_doc(spec, slots, canary=canary),
        render_template_as_native_obj=False,
    ) as dag:
        prepare = PrepareOperator(task_id=m.PREPARE, slots=slots, canary=canary, **common)
        fetch = FetchOperator(task_id=m.FETCH, stage=slots[0], **common)
        prepare >> [fetch, DryRunOperator(task_id=m.DRY_RUN, **common)]
        # A leaf that fails the run when prepare or fetch failed: otherwise every later task
        # is skipped (gates skip themselves off the path) and Airflow calls the run a success.
        # On the normal path the scheduler skips it without starting a worker.
        abort = AbortOperator(task_id=m.ABORT, trigger_rule=TriggerRule.ONE_FAILED, **common)
        fetch >> abort
        ends, report = _ends(spec, common)
        # The release's Asset event. A teardown: it runs after whichever end ran and leaves the
        # run's state to them (the ends that fail the run cannot emit outlet events).
        [abort, *ends[1:], report] >> AnnounceOperator(
            task_id=ANNOUNCE, app=spec.name, **common).as_teardown()
        # Each stage's release maps over what the task before its entry returned: fetch, or
        # the previous gate (the entry itself runs no worker; release.machine.topology).
        built: list[tuple[Any, Any, list[Any]]] = []
        for i, node in enumerate(nodes):
            built.append(_stage(spec, node, slots, ends, common,
                                source=built[-1][1] if built else fetch,
                                after_source=bool(i and nodes[i - 1].after_gate)))
        fetch >> built[0][0]
        for (_, gate, after), (next_enter, _, _) in zip(built, built[1:]):
            gate >> next_enter  # direct too: an empty stage skips its bake and approval
            if after:
                gate >> after[0]
                after[-1] >> next_enter
    # The form's Params are set once the tasks exist: Airflow deep-copies a DAG's params into
    # every operator it creates, which was most of the parse time with many apps. At run time
    # the task still sees them (``process_params`` merges the DAG's params first).
    dag.params = ParamsDict(build_params(spec, canary=canary))
    return dag


def _ends(spec: AppSpec, common: dict[str, Any]) -> tuple[list[Any], Any]:
    """Where gates and approvals may lead besides the next stage: rollback, halt, finalize
    (and the rollback's report, the end of a rolled-back run)."""
    from tars_operators.operators.finalize import FinalizeOperator, HaltOperator
    from tars_operators.operators.rollback import RollbackPlanOperator, RollbackReportOperator

    join = TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
    with TaskGroup(m.ROLLBACK_GROUP):
        plan_rb = RollbackPlanOperator(task_id=m.in_group(m.ROLLBACK_PLAN), trigger_rule=join,
                                       **CONTROL_RETRIES, **common)
        # One host per task, or several (strategy.hosts_per_task, rollback.mapped_items).
        hosts_rb = [_rollback_hosts(spec, task, common, plan_rb, base=m.ROLLBACK_HOSTS)
                    for task in _host_tasks(spec, m.ROLLBACK_HOSTS)]
        # none_skipped: runs after the hosts whatever their outcome, and is skipped at once
        # (no worker start) when the run never rolled back. With hosts on several queues a
        # queue without touched hosts skips its task: all_done, and the report skips itself.
        report = RollbackReportOperator(
            task_id=m.in_group(m.ROLLBACK_REPORT), **CONTROL_RETRIES, **common,
            trigger_rule=TriggerRule.NONE_SKIPPED if len(spec.queues) <= 1 else TriggerRule.ALL_DONE,
        )
        plan_rb >> hosts_rb >> report
    halt = HaltOperator(task_id=m.HALT, trigger_rule=join, **CONTROL_RETRIES, **common)
    finalize = FinalizeOperator(task_id=m.FINALIZE, trigger_rule=join, **CONTROL_RETRIES,
                                **common)
    return [plan_rb, halt, finalize], report


def _stage(spec: AppSpec, node: m.StageNode, slots: list[str], ends: list[Any],
           common: dict[str, Any], *, source: Any, after_source: bool) -> tuple[Any, Any, list[Any]]:
    """One stage slot: enter → release (one task per host, or per chunk of hosts) → gate,
    then bake / approval.

    The release maps over ``source``'s return value (fetch, or the previous gate, which also
    leads to it when the run goes on) and starts as soon as ``source`` is done: each scheduler
    pass that a stage waits for costs ≈0.2 s. It waits for its entry too when something sits
    between the two (``after_source``: a bake or an approval), and with hosts on several queues
    (each queue's picker after the entry lists its share). The gate reads the entry's state to
    know it is on the path."""
    from tars_operators.operators.gate import GateOperator
    from tars_operators.operators.release_host import (
        EnterStageOperator, ReleaseHostOperator, StageEntry,
    )

    c = spec.config
    with TaskGroup(node.stage):
        join = TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
        enter: Any
        # Canary analysis reads the LB's counters before the stage: at its entry when a bake
        # or an approval sits before it (or each queue's picker waits for it), else in the
        # task before it (release_host.next_items).
        if c.analysis.judges(node.stage) and (after_source or len(spec.queues) > 1):
            enter = EnterStageOperator(task_id=m.in_group(node.enter), stage=node.stage,
                                       trigger_rule=join, **CONTROL_RETRIES, **common)
        else:
            enter = StageEntry(task_id=m.in_group(node.enter), trigger_rule=join)
        items_from = source if len(spec.queues) <= 1 else enter
        release = [ReleaseHostOperator.partial(
            task_id=m.in_group(task.task_id), map_index_template=HOSTS_LABEL, stage=node.stage,
            max_active_tis_per_dagrun=c.strategy.parallel,
            retries=c.steps.host_retries, retry_delay=timedelta(seconds=5),
            **_on_queue(spec, task), **common,
        ).expand(host=_hosts_of(items_from, spec, task, common, base=node.release,
                                stage=node.stage))
            for task in _host_tasks(spec, node.release)]
        if items_from is not enter and after_source:
            enter >> release
        gate = GateOperator(
            task_id=m.in_group(node.gate), app=spec.name, node=node, stages=slots,
            on_failure=c.strategy.on_failure, trigger_rule=TriggerRule.ALL_DONE,
            **CONTROL_RETRIES, **common,
        )
        release >> gate
        enter >> gate
        after = _after_gate(spec, node, common)
        if isinstance(node, CanaryNode):
            gate >> _canary_approve(spec, node, common) >> ends
    gate >> ends
    for a, b in zip(after, after[1:]):
        a >> b
    if node.after_gate and node.after_gate[-1] == m.approve_id(node.stage):
        after[-1] >> ends[:2]  # an approval may choose rollback or halt
    return enter, gate, after


def build_rollback_dag(spec: AppSpec, *, defaults_path: Path | None = None) -> DAG:
    """``tars_rollback__<app>``: undo the app's latest release run (or go to ``version``).

    ``plan`` reads every host and resolves each one's target once (shown in its log and the
    run note); ``restore`` brings each listed host there, running, healthy and in rotation.
    """
    from airflow.sdk import Param

    from tars_operators.operators.rollback import AppRollbackPlanOperator
    from tars_operators.remote.validate import SAFE_VERSION
    common = task_paths(spec, defaults_path)
    names = [h.name for h in spec.hosts]
    at_once = _at_once(spec)
    with DAG(
        **manual_dag(spec, "rollback"),
        doc_md=f"Roll `{spec.name}` back: the plan undoes the latest release run on the hosts it "
               f"switched (hosts it did not switch stay; a second rollback moves nothing), or "
               f"puts `version` on every listed host. Each host re-activates its target (no "
               f"download), passes health checks and returns to rotation, at most {at_once} at "
               f"a time (traffic.min_in_service).",
    ) as dag:
        plan_task = AppRollbackPlanOperator(task_id=m.RESTORE_PLAN, **common)
        for task in _host_tasks(spec, m.RESTORE):
            _rollback_hosts(spec, task, common, plan_task, base=m.RESTORE)
    dag.params = ParamsDict({
        "reason": Param("", type="string", minLength=1, title="Reason", section="Rollback"),
        "ticket": Param("", type="string", title="Ticket", section="Rollback"),
        "hosts": Param([], type="array", items={"type": "string", "enum": names},
                       uniqueItems=True, examples=names, title="Only these hosts",
                       section="Rollback"),
        "version": Param(None, type=["null", "string"], pattern=_whole(SAFE_VERSION.pattern), title="To version",
                         description="Put this release (good or adopted, already on the hosts) on "
                                     "every listed host; empty: undo the latest release run",
                         section="Rollback"),
    })
    return dag


def build_inspect_dag(spec: AppSpec, *, defaults_path: Path | None = None) -> DAG:
    """``tars_inspect__<app>``: read every host's releases and LB state (the App view's
    "Refresh from hosts"); manual only, one run at a time, changes nothing."""
    from tars_operators.operators.inspect import INSPECT, InspectHostsOperator

    with DAG(
        # Read-only, started from the App view: a paused one would leave the refresh queued.
        **{**manual_dag(spec, "inspect"), "is_paused_upon_creation": False},
        doc_md=f"Read what every host of `{spec.name}` runs (current release, previous good, "
               f"other releases on disk, a release's lease) over SSH and its state in the load "
               f"balancer. Changes nothing; the App view shows the result.",
    ) as dag:
        for task in _host_tasks(spec, INSPECT):  # one per queue: a worker that reaches its hosts
            InspectHostsOperator(task_id=task.task_id, host_queue=task.queue,
                                 **task_paths(spec, defaults_path),
                                 **({"queue": task.queue} if task.queue is not None else {}))
    return dag


def _rollback_hosts(spec: AppSpec, task: m.HostTasks, common: dict[str, Any], plan: Any, *,
                    base: str) -> Any:
    """A rollback's host task (``rollback.hosts`` or the rollback DAG's ``restore``): mapped
    over the plan's items (one host, or a chunk), at most ``_at_once`` at a time."""
    from tars_operators.operators.rollback import RollbackHostOperator

    items = _hosts_of(plan, spec, task, common, base=base)
    partial = RollbackHostOperator.partial(
        task_id=m.in_group(task.task_id) if base == m.ROLLBACK_HOSTS else task.task_id,
        map_index_template=HOSTS_LABEL, max_active_tis_per_dagrun=_at_once(spec),
        source=items.operator.task_id, **_on_queue(spec, task), **common,
    )
    return partial.expand(host=items) if base == m.ROLLBACK_HOSTS else partial.expand_kwargs(items)


def _host_tasks(spec: AppSpec, base: str) -> tuple[m.HostTasks, ...]:
    """``base``'s tasks, one per queue of the app's hosts (``release.machine.split_hosts``)."""
    return m.split_hosts(base, [h.name for h in spec.hosts], spec.queue_of, spec.queues)


def _on_queue(spec: AppSpec, task: m.HostTasks) -> dict[str, Any]:
    """Where a host task runs: its ``queue`` (none given: the executor's default queue) and
    the load balancer's pool (``traffic.pool``: one slot per host task, release/pools.py)."""
    placed: dict[str, Any] = {"queue": task.queue} if task.queue is not None else {}
    pool = spec.config.traffic.pool
    if pool is not None:
        placed.update(pool=pool.name, pool_slots=1)
    return placed


def _hosts_of(upstream: Any, spec: AppSpec, task: m.HostTasks, common: dict[str, Any], *,
              base: str, stage: str | None = None) -> Any:
    """What ``task`` maps over: the upstream's list, or (hosts on several queues) its queue's
    share, picked by a small task after the upstream (``operators.queues``)."""
    from tars_operators.operators.queues import QueueHostsOperator

    if len(spec.queues) <= 1:
        return upstream.output
    local = m.in_group(upstream.task_id) if upstream.task_group.group_id else upstream.task_id
    picker = QueueHostsOperator(task_id=m.queue_hosts_id(local, task.queue),
                                source=upstream.task_id, base=base, host_queue=task.queue,
                                stage=stage, **CONTROL_RETRIES, **common)
    upstream >> picker
    return picker.output


def _whole(pattern: str) -> str:
    """A whole-string JSON Schema regex (JSON Schema ``pattern`` searches)."""
    return f"^(?:{pattern.removeprefix('^').removesuffix('$')})$"


def _after_gate(spec: AppSpec, node: m.StageNode, common: dict[str, Any]) -> list[Any]:
    """Bake (deferrable) and approval (human in the loop) between this gate and the next stage."""
    from airflow.providers.standard.operators.hitl import HITLBranchOperator
    from airflow.providers.standard.sensors.time_delta import WaitSensor

    c = spec.config
    tasks: list[Any] = []
    for task_id in node.after_gate:
        if task_id == m.bake_id(node.stage):
            # Measured from when the bake starts (TimeDeltaSensor counts from the run's logical
            # time, which a manual run has long passed); deferred: no worker slot held.
            tasks.append(WaitSensor(
                task_id=m.in_group(task_id), time_to_wait=timedelta(seconds=c.strategy.bake_seconds),
                deferrable=True,
            ))
        elif task_id == m.approve_id(node.stage):
            a = c.strategy.approval
            options = m.approval_choices(node.next_enter)
            default = m.APPROVAL_ANSWERS[a.default]
            subject = f"{spec.name}: continue the release after {node.stage}?"
            tasks.append(HITLBranchOperator(
                task_id=m.in_group(task_id), subject=subject,
                on_execute_callback=_approval_needed(common, subject),
                body=(f"The {node.stage} stage of **{spec.name}** passed. Continue to the next "
                      f"stage, roll back every host this run touched, or halt here. Without an "
                      f"answer in {int(a.timeout_seconds)} s: **{default}**."),
                options=list(options), options_mapping=options, defaults=[default],
                response_timeout=timedelta(seconds=a.timeout_seconds),
            ))
    return tasks


@dataclass(frozen=True)
class CanaryNode(m.StageNode):
    """The canary's only stage: when it passes, a person decides whether to keep it."""

    approve: str = ""

    @property
    def choices(self) -> dict[m.Decision, str]:
        return {**super().choices, m.Decision.FINISH: self.approve}


def _canary_approval(spec: AppSpec, canary: bool) -> bool:
    return bool(canary and spec.config.schedule.canary
                and spec.config.schedule.canary.then == "approval")


def _canary_approve(spec: AppSpec, node: CanaryNode, common: dict[str, Any]) -> Any:
    """Keep the canary (the run succeeds), roll the fort back, or halt."""
    from airflow.providers.standard.operators.hitl import HITLBranchOperator

    a = spec.config.strategy.approval
    options = m.approval_choices(m.FINALIZE)
    default = m.APPROVAL_ANSWERS[a.default]
    subject = f"{spec.name}: keep the canary on {node.stage}?"
    return HITLBranchOperator(
        task_id=m.in_group(node.approve), subject=subject,
        on_execute_callback=_approval_needed(common, subject),
        body=(f"The scheduled canary of **{spec.name}** passed on the {node.stage} stage. "
              f"Continue keeps it there (release the rest with the deploy DAG), Roll back "
              f"restores the {node.stage} host(s), Halt leaves them as they are. Without an "
              f"answer in {int(a.timeout_seconds)} s: **{default}**."),
        options=list(options), options_mapping=options, defaults=[default],
        response_timeout=timedelta(seconds=a.timeout_seconds),
    )


def _approval_needed(common: dict[str, Any], question: str) -> Any:
    """Sends the ``approval_needed`` event when an approval starts waiting."""
    from tars_operators.release.events import ApprovalNeeded

    return ApprovalNeeded(common["config_path"], common["defaults_path"], question)


def _schedule(spec: AppSpec) -> Any:
    """The canary's timetable: its cron, in the app's timezone, only inside deploy windows."""
    from tars_operators.timetables import WindowTimetable

    canary = spec.config.schedule.canary
    return WindowTimetable(canary.cron, schedule=spec.config.schedule) if canary else None


def _at_once(spec: AppSpec) -> int:
    """How many hosts may be out of rotation together without breaking the capacity floor."""
    from tars_operators.plan.capacity import at_once

    plan = spec.default_plan
    return at_once(plan.fleet_size, plan.min_in_service)
