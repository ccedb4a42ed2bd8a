"""Read what Tars recorded about an app from Airflow's database (read-only, in the api-server).

Runs of the app's DAGs (deploy, canary, rollback), their host tasks' states and results (XCom
``return_value``), the failures host tasks pushed (XCom ``failure``) and the plan ``prepare``
made (XCom ``plan``). A few indexed queries per page view; no SSH login. The rows are built by
``web.fleet``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tars_operators.release.machine import (
    PREPARE, gate_id, is_enter_task, is_release_task, stage_of,
)
from tars_operators.web.fleet import HostRecord, RunRecord, is_host_task, plan_stages
from tars_operators.web.onhost import InspectRecord
from tars_operators.web.readiness import READINESS, ReadinessSource, from_prepare

PREFIXES = ("tars_deploy__", "tars_canary__", "tars_rollback__")
RUNS_READ = 50  # the newest runs per app read for history and host state
INSPECT_PREFIX = "tars_inspect__"  # "Refresh from hosts" runs: not releases, not in the history
INSPECT_TASK = "inspect"
HOST_RESULTS = "host_results"  # a multi-host release or rollback task's per-host results


def app_dag_ids(app: str) -> list[str]:
    return [p + app for p in PREFIXES]


def deploy_apps(session: Session) -> list[str]:
    """Apps Airflow has a deploy DAG for (stale ones too: their history stays readable)."""
    from airflow.models.dag import DagModel

    ids = session.scalars(select(DagModel.dag_id).where(DagModel.dag_id.like("tars\\_deploy\\_\\_%",
                                                                             escape="\\")))
    return sorted(d.removeprefix("tars_deploy__") for d in ids)


def next_canary(session: Session, app: str) -> datetime | None:
    """When the scheduler creates the app's next scheduled canary run (None: none scheduled,
    or its canary DAG is paused or absent)."""
    from airflow.models.dag import DagModel

    row = session.execute(select(DagModel.is_paused, DagModel.next_dagrun_create_after)
                          .where(DagModel.dag_id == PREFIXES[1] + app)).first()
    if row is None or row.is_paused:
        return None
    when: datetime | None = row.next_dagrun_create_after
    return when


def read_inspect(session: Session, app: str) -> InspectRecord | None:
    """The app's newest refresh run, and the result of the newest one that read the hosts."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel

    dag_id = INSPECT_PREFIX + app
    runs = list(session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)
                                .order_by(DagRun.id.desc()).limit(10)))
    if not runs:
        return None
    rows = session.execute(
        select(XComModel.run_id, XComModel.value, XComModel.dag_id, XComModel.task_id,
               XComModel.map_index, XComModel.key)
        .where(XComModel.dag_id == dag_id, XComModel.key == "return_value",
               XComModel.run_id.in_([r.run_id for r in runs])))
    # One inspect task per queue of the app's hosts (``inspect``, ``inspect.<queue>``): a
    # run's result is theirs together.
    results: dict[str, dict[str, Any] | None] = {}
    for row in rows:
        part = _dict(XComModel.deserialize_value(row))
        if row.task_id.split(".", 1)[0] == INSPECT_TASK and part is not None:
            results[row.run_id] = _merge_reads(results.get(row.run_id), part)
    newest = runs[0]
    read_run = next((r.run_id for r in runs if results.get(r.run_id)), "")
    return InspectRecord(dag_id, newest.run_id,
                         _state(str(newest.state)) if newest.state is not None else None,
                         newest.start_date, newest.end_date, read_run, results.get(read_run))


def read_readiness(session: Session, app: str) -> ReadinessSource | None:
    """The newest preflight a release's ``prepare`` recorded (XCom ``readiness``): one
    indexed query, the newest row only."""
    from airflow.models.xcom import XComModel

    row = session.execute(
        select(XComModel.dag_id, XComModel.run_id, XComModel.task_id, XComModel.map_index,
               XComModel.key, XComModel.value)
        # deploy and canary runs are planned with preflight; a rollback is not
        .where(XComModel.dag_id.in_([p + app for p in PREFIXES[:2]]),
               XComModel.task_id == PREPARE, XComModel.key == READINESS)
        .order_by(XComModel.timestamp.desc()).limit(1)).first()
    if row is None:
        return None
    return from_prepare(row.dag_id, row.run_id, XComModel.deserialize_value(row))


def _merge_reads(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    """Two inspect tasks' reads as one: every host, read at the earlier time."""
    if a is None:
        return b
    times = [str(t) for t in (a.get("read_at"), b.get("read_at")) if t]
    return {"read_at": min(times) if times else "",
            "hosts": [*(a.get("hosts") or []), *(b.get("hosts") or [])]}


def read_app(session: Session, app: str) -> tuple[list[RunRecord], list[HostRecord]]:
    """The app's newest runs and every host task of those runs."""
    from airflow.models.dagrun import DagRun

    dag_ids = app_dag_ids(app)
    runs = list(session.scalars(
        select(DagRun).where(DagRun.dag_id.in_(dag_ids))
        .order_by(DagRun.id.desc()).limit(RUNS_READ)))
    return _read_runs(session, dag_ids, runs)


def read_run(session: Session, dag_id: str, run_id: str) -> tuple[RunRecord | None,
                                                                   list[HostRecord]]:
    """One run of a Tars DAG and its host tasks (None: no such run)."""
    from airflow.models.dagrun import DagRun

    runs = list(session.scalars(select(DagRun).where(DagRun.dag_id == dag_id,
                                                     DagRun.run_id == run_id)))
    records, hosts = _read_runs(session, [dag_id], runs)
    return (records[0] if records else None), hosts


def _read_runs(session: Session, dag_ids: list[str],
               runs: list[Any]) -> tuple[list[RunRecord], list[HostRecord]]:
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.models.xcom import XComModel

    if not runs:
        return [], []
    keys = {(r.dag_id, r.run_id) for r in runs}
    run_ids = sorted({r.run_id for r in runs})
    tis = [t for t in session.execute(
        select(TI.dag_id, TI.run_id, TI.task_id, TI.map_index, TI.state, TI.start_date,
               TI.end_date, TI._rendered_map_index.label("rendered_map_index"))
        .where(TI.dag_id.in_(dag_ids), TI.run_id.in_(run_ids))) if (t.dag_id, t.run_id) in keys]
    xcoms: dict[tuple[str, str, str, int, str], Any] = {}
    for row in session.execute(
            select(XComModel.dag_id, XComModel.run_id, XComModel.task_id, XComModel.map_index,
                   XComModel.key, XComModel.value)
            .where(XComModel.dag_id.in_(dag_ids), XComModel.run_id.in_(run_ids),
                   XComModel.key.in_(("return_value", "failure", "plan", HOST_RESULTS,
                                      "analysis")))):
        if row.key in ("plan", "analysis") or is_host_task(row.task_id):
            xcoms[(row.dag_id, row.run_id, row.task_id, row.map_index, row.key)] = \
                XComModel.deserialize_value(row)
    hosts = [h for t in tis if is_host_task(t.task_id) for h in _host_records(t, xcoms)]
    stages = _stages(tis)
    failed: dict[tuple[str, str], list[str]] = defaultdict(list)
    for h in hosts:
        if h.state in ("failed", "upstream_failed") and is_release_task(h.task_id):
            failed[(h.dag_id, h.run_id)].append(h.host)
    records = [_run_record(r, xcoms, stages, failed) for r in runs]
    return records, [h for h in hosts if h.host]


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _host_records(t: Any, xcoms: dict[tuple[str, str, str, int, str], Any]) -> list[HostRecord]:
    """The hosts of one host task instance: one, or each host of a multi-host task
    (``strategy.hosts_per_task``) with its own result, state and reason."""
    many = xcoms.get((t.dag_id, t.run_id, t.task_id, t.map_index, HOST_RESULTS))
    if not isinstance(many, list):
        return [_host_record(t, xcoms)]
    ti_state = _state(str(t.state) if t.state is not None else None)
    out = []
    for r in many:
        if not isinstance(r, dict) or not r.get("host"):
            continue
        mine = r.get("state")
        # a multi-host rollback's hosts end restored or unchanged (operators/rollback.py)
        state = ("failed" if mine == "failed"
                 else "success" if mine in ("ok", "untouched", "restored", "unchanged")
                 else ti_state)  # not finished: the task's state (failed if it died)
        failed = mine == "failed"
        out.append(HostRecord(t.dag_id, t.run_id, t.task_id, str(r["host"]), state,
                              t.end_date or t.start_date, None if failed else r,
                              str(r.get("message") or "") if failed else None,
                              str(r.get("phase") or "") or None if failed else None))
    return out


def _host_record(t: Any, xcoms: dict[tuple[str, str, str, int, str], Any]) -> HostRecord:
    key = (t.dag_id, t.run_id, t.task_id, t.map_index)
    result = _dict(xcoms.get((*key, "return_value")))
    failure = _dict(xcoms.get((*key, "failure")))
    host = str((result or {}).get("host") or (failure or {}).get("host")
               or t.rendered_map_index or "")
    state = str(t.state) if t.state is not None else None
    return HostRecord(t.dag_id, t.run_id, t.task_id, host, _state(state),
                      t.end_date or t.start_date, result,
                      str(failure.get("message")) if failure else None,
                      str(failure.get("phase") or "") or None if failure else None)


def _state(state: str | None) -> str | None:
    # TaskInstanceState's str() may be "TaskInstanceState.SUCCESS" on some versions.
    return state.rsplit(".", 1)[-1].lower() if state else None


def _stages(tis: list[Any]) -> dict[tuple[str, str], str]:
    """Per run, the last stage whose ``enter`` task ran (the stage a running run is in)."""
    entered: dict[tuple[str, str], tuple[Any, str]] = {}
    for t in tis:
        if is_enter_task(t.task_id) and _state(str(t.state) if t.state else None) == "success":
            when = t.start_date
            key = (t.dag_id, t.run_id)
            if key not in entered or (when and entered[key][0] and when > entered[key][0]):
                entered[key] = (when, stage_of(t.task_id))
    return {k: v[1] for k, v in entered.items()}


def _run_record(run: Any, xcoms: dict[tuple[str, str, str, int, str], Any],
                stages: dict[tuple[str, str], str],
                failed: dict[tuple[str, str], list[str]]) -> RunRecord:
    plan = _dict(xcoms.get((run.dag_id, run.run_id, PREPARE, -1, "plan")))
    state = _state(str(run.state)) if run.state is not None else None
    who = str((plan or {}).get("who") or run.triggering_user_name or "")
    return RunRecord(run.dag_id, run.run_id, state, run.start_date, run.end_date,
                     conf=dict(run.conf or {}), who=who, plan=plan,
                     stage=stages.get((run.dag_id, run.run_id)), note=str(run.note or ""),
                     failed_hosts=tuple(sorted(failed.get((run.dag_id, run.run_id), []))),
                     analysis=_analysis(run, xcoms, plan))


def _analysis(run: Any, xcoms: dict[tuple[str, str, str, int, str], Any],
              plan: dict[str, Any] | None) -> tuple[str, ...]:
    """Each judged stage's canary analysis verdict (its gate's XCom ``analysis``), in order."""
    found = [_dict(xcoms.get((run.dag_id, run.run_id, gate_id(stage), -1, "analysis")))
             for stage, _ in plan_stages(plan)]
    return tuple(str(a["headline"]) for a in found if a and a.get("headline"))
