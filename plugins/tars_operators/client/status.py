"""``tars status APP [RUN]``: the run, its stages, the brake and the next canary."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from tars_operators.cli import EXIT_OK, arg, command
from tars_operators.client.api import Airflow, ApiError
from tars_operators.client.progress import snapshot
from tars_operators.client.session import api_error, connect, deploy_dag, known_app


@command(
    "status", "where the releases of APP stand: the run, its stages, the brake, the canary",
    arg("app", help="app name (app.name)"),
    arg("run", nargs="?", default=None, help="run id (default: the latest run)"),
)
def status(args: argparse.Namespace) -> int:
    api = connect("status")
    if isinstance(api, int):
        return api
    try:
        for line in status_lines(api, args.app, args.run):
            print(line)
    except ApiError as exc:
        return api_error("status", exc)
    return EXIT_OK


def status_lines(api: Airflow, app: str, run_id: str | None) -> list[str]:
    dag_id = deploy_dag(app)
    dag = known_app(api, app)
    brake_state = api.request("GET", f"/tars/apps/{quote(app, safe='')}/brake").get("brake")
    lines = [f"{dag_id}: {'PAUSED' if dag.get('is_paused') else 'active'} · brake "
             + (f"ON by {brake_state['by']} ({brake_state['action']}): {brake_state['reason']}"
                if brake_state else "off")]
    runs = [api.run(dag_id, run_id)] if run_id else api.runs(dag_id, limit=1)
    if not runs:
        lines.append("no runs yet")
    for run in runs:
        lines += run_lines(api, dag_id, run, app)
    lines += canary_lines(api, app)
    return lines


def run_lines(api: Airflow, dag_id: str, run: dict[str, Any], app: str) -> list[str]:
    snap = snapshot(run, api.task_instances(dag_id, run["dag_run_id"]))
    lines = [f"run {run['dag_run_id']}: {snap.state} (run after {run.get('run_after')}, "
             f"{run.get('run_type')}, by {run.get('triggering_user_name') or '?'})"]
    lines += [f"  {line}" for line in (run.get("note") or "").strip().splitlines() if line]
    lines += [f"  {stage.line()}" for stage in snap.stages]
    if snap.waiting_window:
        lines.append("  waiting for the deploy window")
    lines += [f"  awaiting approval ({t}): tars approve {app} {run['dag_run_id']} "
              "[--reject|--halt]" for t in snap.approvals]
    lines += [f"  brake pulled: holding at {g}" for g in snap.braked_at]
    return lines


def canary_lines(api: Airflow, app: str) -> list[str]:
    try:
        dag = api.dag(f"tars_canary__{app}")
    except ApiError as exc:
        if exc.status == 404:
            return []
        raise
    paused = " (PAUSED)" if dag.get("is_paused") else ""
    return [f"canary tars_canary__{app}{paused}: {dag.get('timetable_description') or ''}; "
            f"next run {dag.get('next_dagrun_run_after') or 'none'}"]
