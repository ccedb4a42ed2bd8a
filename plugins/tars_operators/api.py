"""Tars's REST routes inside the Airflow api-server (mounted at ``/tars``).

Every route needs an authenticated Airflow user; changing the brake needs permission to
edit runs of the app's deploy DAG (the role that may release may also stop a release).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from airflow.api_fastapi.core_api.security import GetUserDep
from tars_operators.release.brake import (
    append_audit, audit_entry, audit_key, brake_key, brake_value, parse_brake,
)

log = logging.getLogger(__name__)
app = FastAPI(title="Tars", description="Brake, audit trail and plan preview of Tars releases")


def _variables() -> Any:
    from airflow.models.variable import Variable

    return Variable


def _authorize(app_name: str, user: Any, method: str) -> None:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity, DagDetails,
    )

    ok = get_auth_manager().is_authorized_dag(
        method=method, access_entity=DagAccessEntity.RUN,
        details=DagDetails(id=f"tars_deploy__{app_name}"), user=user,
    )
    if not ok:
        raise HTTPException(403, f"{user.get_name()} may not change releases of {app_name}")


def _known_app(app_name: str) -> None:
    if not app_name.replace("_", "").isalnum() or not app_name[:1].isalpha():
        raise HTTPException(400, f"not an app name: {app_name!r}")


class BrakeBody(BaseModel):
    reason: str = Field(min_length=1, max_length=500)
    action: str = Field("hold", pattern="^(hold|rollback)$")


def _audit(app_name: str, entry: dict[str, Any]) -> None:
    V = _variables()
    V.set(audit_key(app_name), append_audit(V.get(audit_key(app_name), default_var=None), entry))
    log.warning("tars audit %s: %s", app_name, json.dumps(entry))


@app.get("/apps/{app_name}/brake")
def get_brake(app_name: str, user: GetUserDep) -> dict[str, Any]:
    _known_app(app_name)
    brake = parse_brake(_variables().get(brake_key(app_name), default_var=None))
    return {"app": app_name, "brake": brake.__dict__ if brake else None}


@app.post("/apps/{app_name}/brake")
def pull_brake(app_name: str, body: BrakeBody, user: GetUserDep) -> dict[str, Any]:
    _known_app(app_name)
    _authorize(app_name, user, "PUT")
    who = user.get_name()
    _variables().set(brake_key(app_name), brake_value(who, body.reason, body.action))
    _audit(app_name, audit_entry("brake pulled", who, body.reason, action=body.action))
    return get_brake(app_name, user)


@app.delete("/apps/{app_name}/brake")
def release_brake(app_name: str, user: GetUserDep, reason: str = "") -> dict[str, Any]:
    _known_app(app_name)
    _authorize(app_name, user, "PUT")
    V = _variables()
    was = parse_brake(V.get(brake_key(app_name), default_var=None))
    V.delete(brake_key(app_name))
    if was is not None:
        _audit(app_name, audit_entry("brake released", user.get_name(), reason,
                                     was_by=was.by, was_reason=was.reason))
    return {"app": app_name, "brake": None, "was": was.__dict__ if was else None}


@app.get("/apps/{app_name}/audit")
def get_audit(app_name: str, user: GetUserDep) -> dict[str, Any]:
    _known_app(app_name)
    raw = _variables().get(audit_key(app_name), default_var=None)
    return {"app": app_name, "audit": json.loads(raw) if raw else []}


