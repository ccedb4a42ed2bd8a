"""Start a "Refresh from hosts": a run of ``tars_inspect__<app>`` (the api-server itself never
logs in to a host; a worker reads them with its connections, and the run is the audit)."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from tars_operators.web.records import INSPECT_PREFIX


def start_refresh(session: Session, app: str, who: str) -> dict[str, Any]:
    """Trigger the app's inspect DAG, or return the refresh already queued or running.

    404 when Airflow has no inspect DAG for the app, 409 when it is paused (a run would
    wait forever).
    """
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType

    dag_id = INSPECT_PREFIX + app
    paused = session.scalar(select(DagModel.is_paused).where(DagModel.dag_id == dag_id))
    if paused is None:
        raise HTTPException(404, f"Airflow has no DAG {dag_id} yet (the DAG file builds it "
                                 "with the app's other DAGs: wait for the next parse)")
    if paused:
        raise HTTPException(409, f"{dag_id} is paused: unpause it in Airflow to refresh {app} "
                                 "from its hosts")
    pending = session.scalars(select(DagRun).where(
        DagRun.dag_id == dag_id, DagRun.state.in_([DagRunState.QUEUED, DagRunState.RUNNING]))
        .order_by(DagRun.id.desc())).first()
    if pending is not None:
        return {"dag_id": dag_id, "run_id": pending.run_id, "started": False}
    run = trigger_dag(dag_id, triggered_by=DagRunTriggeredByType.UI, triggering_user_name=who,
                      conf={}, note=f"refresh from hosts, asked by {who} in the App view",
                      session=session)
    if run is None:  # pragma: no cover - trigger_dag returns the run it created
        raise HTTPException(500, f"Airflow did not create a run of {dag_id}")
    return {"dag_id": dag_id, "run_id": run.run_id, "started": True}
