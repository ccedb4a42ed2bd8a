"""What a user may do from the Tars views: answer a release's approval, roll an app back.

Each route asks the same question the brake routes ask (edit permission on the runs of the
app's deploy DAG) and then the one Airflow's own route asks, and records what it did through
Airflow's own code: an answer goes through the public HITL PATCH endpoint's function (already
answered 409, unknown option 400, not an assignee 403), a rollback through the public trigger
endpoint's function (the DAG's params validate the conf: a bad one is a 400 and starts no run;
the user is the triggering user). Both leave an entry in the app's audit trail. The pages ask
``can_edit`` and show no action to anyone else; the routes refuse them anyway (403).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep
from tars_operators.release.brake import append_audit, audit_entry, audit_key

log = logging.getLogger(__name__)
router = APIRouter()


def rollback_dag_id(app_name: str) -> str:
    return f"tars_rollback__{app_name}"


def _core() -> Any:
    # api.py includes this router at its end: import it lazily, not at module level.
    from tars_operators import api

    return api


def may_edit(app_name: str, user: Any, session: Session) -> bool:
    """Whether the user may change the app's releases (what the pages ask before showing)."""
    try:
        _core()._authorize(app_name, user, "PUT", session)
    except HTTPException:
        return False
    return True


def _require_dag_access(dag_id: str, entity: str, method: Literal["POST", "PUT"], user: Any,
                        session: Session, what: str) -> None:
    """403 unless the auth manager allows ``method`` on ``entity`` of ``dag_id`` (Airflow's
    own check on the route this action stands for)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity, DagDetails,
    )
    from airflow.models.dag import DagModel

    details = DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id, session=session))
    if not get_auth_manager().is_authorized_dag(
            method=method, access_entity=DagAccessEntity[entity], details=details, user=user):
        raise HTTPException(403, f"{user.get_name()} may not {what}: that needs "
                                 f"{method} permission on {entity.lower()} of DAG {dag_id}")


def _audit(app_name: str, entry: dict[str, Any], session: Session) -> None:
    """Append to the app's audit trail in the request's session: written with the action
    (committed together, or not at all), and no second writer waiting on the first (SQLite)."""
    variables = _core()._variables()
    key = audit_key(app_name)
    variables.set(key, append_audit(variables.get(key, default_var=None), entry), session=session)
    log.warning("tars audit %s: %s", app_name, json.dumps(entry))


def _same_app(app_name: str, dag_id: str) -> None:
    from tars_operators.web.views import app_from_dag_id

    if app_from_dag_id(dag_id) != app_name:
        raise HTTPException(400, f"{dag_id} is not a DAG of app {app_name}")


# ---- approvals -------------------------------------------------------------------------

@dataclass(frozen=True)
class PendingApproval:
    """A human-in-the-loop task of a run still waiting for an answer."""

    task_id: str
    map_index: int
    subject: str
    body: str
    options: list[str]
    defaults: list[str]
    since: str


def pending_approvals(session: Session, dag_id: str, run_id: str) -> list[PendingApproval]:
    """The run's unanswered approvals (HITL detail rows without a response), oldest first."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance as TI

    rows = session.execute(
        select(TI.task_id, TI.map_index, HITLDetail.subject, HITLDetail.body,
               HITLDetail.options, HITLDetail.defaults, HITLDetail.created_at)
        .join(HITLDetail, HITLDetail.ti_id == TI.id)
        .where(TI.dag_id == dag_id, TI.run_id == run_id, HITLDetail.responded_at.is_(None))
        .order_by(HITLDetail.created_at))
    return [PendingApproval(r.task_id, r.map_index, r.subject, r.body or "",
                            [str(o) for o in r.options or []], [str(d) for d in r.defaults or []],
                            r.created_at.isoformat(timespec="seconds") if r.created_at else "")
            for r in rows]


@router.get("/apps/{app_name}/runs/{dag_id}/{run_id}/approvals")
def get_approvals(app_name: str, dag_id: str, run_id: str, user: GetUserDep,
                  session: SessionDep) -> dict[str, Any]:
    """The run's pending approvals and whether this user may answer them."""
    _core()._known_app(app_name, user, "GET", session)
    _same_app(app_name, dag_id)
    return {"can_edit": may_edit(app_name, user, session),
            "approvals": [asdict(a) for a in pending_approvals(session, dag_id, run_id)]}


class AnswerBody(BaseModel):
    option: str = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=500)
    map_index: int = -1


@router.post("/apps/{app_name}/runs/{dag_id}/{run_id}/approvals/{task_id}")
def answer_approval(app_name: str, dag_id: str, run_id: str, task_id: str, body: AnswerBody,
                    user: GetUserDep, session: SessionDep) -> dict[str, Any]:
    """Answer one approval of the run as Airflow's HITL PATCH does, and audit who and why."""
    from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail

    _core()._known_app(app_name, user, "PUT", session)
    _same_app(app_name, dag_id)
    _require_dag_access(dag_id, "HITL_DETAIL", "PUT", user, session,
                        f"answer approvals of {app_name}")
    _settle(session, dag_id, run_id, task_id, body.map_index)
    answer = update_hitl_detail(
        dag_id=dag_id, dag_run_id=run_id, task_id=task_id, map_index=body.map_index,
        update_hitl_detail_payload=UpdateHITLDetailPayload(chosen_options=[body.option]),
        user=user, session=session)
    _audit(app_name, audit_entry("approval answered", user.get_name(), body.reason,
                                 option=body.option, run_id=run_id, task_id=task_id), session)
    return {"app": app_name, "run_id": run_id, "task_id": task_id,
            "chosen_options": list(answer.chosen_options),
            "responded_at": answer.responded_at.isoformat(timespec="seconds")}


def _settle(session: Session, dag_id: str, run_id: str, task_id: str, map_index: int,
            timeout: float = 10.0) -> None:
    """Hold the answer until its task has been parked long enough for Airflow to keep it
    (``client.settle``: an answer in the moment of parking makes Airflow fail the task)."""
    import time
    from datetime import datetime, timezone

    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance as TI
    from tars_operators.client.settle import answer_delay

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Columns, not ORM objects: each look reads what the scheduler and workers committed.
        rows = list(session.execute(
            select(TI.state, HITLDetail.created_at).outerjoin(HITLDetail, HITLDetail.ti_id == TI.id)
            .where(TI.dag_id == dag_id, TI.run_id == run_id, TI.task_id == task_id,
                   TI.map_index == map_index)))
        row = rows[0] if rows else None
        if row is None:
            return  # Airflow's answer says what is wrong (404)
        delay = answer_delay(None if row[0] is None else str(row[0]), row[1],
                             datetime.now(timezone.utc))
        if delay == 0:
            return
        time.sleep(min(delay or 0.3, max(0.0, deadline - time.monotonic())))


# ---- rollback --------------------------------------------------------------------------

class RollbackBody(BaseModel):
    reason: str = Field(min_length=1, max_length=500)
    ticket: str = Field("", max_length=200)
    hosts: list[str] = Field(default_factory=list, max_length=1000)
    version: str | None = Field(None, max_length=200)

    def conf(self) -> dict[str, Any]:
        """The rollback DAG's params (its schema checks them, not this model)."""
        return {"reason": self.reason, "ticket": self.ticket, "hosts": self.hosts,
                "version": self.version or None}


_DAG_BAG: list[Any] = []


def _dag_bag(request: Request) -> Any:
    """The api-server's DAG bag; Tars's mounted app has none of its own, so one is made once."""
    bag = getattr(request.app.state, "dag_bag", None)
    if bag is not None:
        return bag
    if not _DAG_BAG:
        from airflow.api_fastapi.common.dagbag import create_dag_bag

        _DAG_BAG.append(create_dag_bag())
    return _DAG_BAG[0]


@router.post("/apps/{app_name}/rollback")
def roll_back(app_name: str, body: RollbackBody, request: Request, user: GetUserDep,
              session: SessionDep) -> dict[str, Any]:
    """Trigger ``tars_rollback__<app>`` as Airflow's trigger endpoint does; 400 on a bad conf."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody
    from airflow.api_fastapi.core_api.routes.public.dag_run import trigger_dag_run

    _core()._known_app(app_name, user, "PUT", session)
    dag_id = rollback_dag_id(app_name)
    _require_dag_access(dag_id, "RUN", "POST", user, session, f"roll {app_name} back")
    conf = body.conf()
    run = trigger_dag_run(dag_id=dag_id, dag_bag=_dag_bag(request), user=user, session=session,
                          request=request,
                          body=TriggerDAGRunPostBody(logical_date=None, conf=conf))
    # Annotated as the response model, it returns the DagRun row FastAPI would serialize.
    run_id = str(cast(Any, run).run_id)
    _audit(app_name, audit_entry("rollback requested", user.get_name(), body.reason,
                                 run_id=run_id, ticket=body.ticket, hosts=conf["hosts"],
                                 version=conf["version"]), session)
    return {"app": app_name, "dag_id": dag_id, "run_id": run_id}
