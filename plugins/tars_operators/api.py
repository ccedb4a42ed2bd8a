"""Tars's REST routes inside the Airflow api-server (mounted at ``/tars``).

Every route needs an authenticated Airflow user; changing the brake needs permission to
edit runs of the app's deploy DAG (the role that may release may also stop a release).
``GET /tars/apps/{app}/plan`` previews a release (stages, capacity floor, deploy window) and
refuses bad input with a 400 saying why, so a client can stop before triggering a run.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from airflow.api_fastapi.core_api.security import GetUserDep
from tars_operators.release.brake import (
    append_audit, audit_entry, audit_key, brake_key, brake_value, parse_brake,
)
from tars_operators.web.pages import SecurityHeaders, static_response

log = logging.getLogger(__name__)
app = FastAPI(title="Tars", description="Brake, audit trail and plan preview of Tars releases")
# CSP, nosniff and Referrer-Policy on every Tars response: pages, static files, JSON, errors.
app.add_middleware(SecurityHeaders)


def _variables() -> Any:
    from airflow.models.variable import Variable

    return Variable


def _authorize(app_name: str, user: Any, method: Literal["GET", "PUT"]) -> None:
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


@app.get("/ui", response_class=HTMLResponse)
def brake_page(request: Request, user: GetUserDep,
               app_name: str = Query("", alias="app", max_length=100)) -> HTMLResponse:
    """The brake page linked from the Airflow UI's navigation (needs a logged-in user)."""
    from tars_operators.ui import page

    return page(base=request.scope.get("root_path", ""), app=app_name)


@app.get("/static/{name}", include_in_schema=False)
def static_file(name: str, user: GetUserDep) -> Response:
    """A script or style sheet of the Tars pages: fixed names only, 404 for any other."""
    return static_response(name)


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


# ---- plan preview ----------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def config_dir() -> Path:
    """Where the app configs are: ``$TARS_CONFIG_DIR`` like the DAG file, else configs/apps."""
    return Path(os.environ.get("TARS_CONFIG_DIR", REPO / "configs" / "apps"))


def load_app_spec(app_name: str) -> Any:
    """The app's spec as the DAG file loads it; 404 unknown app, 422 broken config."""
    from tars_operators.config.loader import load_all, load_files

    directory = config_dir()
    guess = [p for p in (directory / f"{app_name}.yaml", directory / f"{app_name}.yml")
             if p.is_file()]
    result = load_files(guess, base_dir=REPO) if guess else None
    if result is None or app_name not in result.specs:
        result = load_all(directory, base_dir=REPO) if directory.is_dir() else None
    if result is not None and app_name in result.specs:
        return result.specs[app_name]
    errors = [line for err in (result.errors.values() if result else ()) for line in err.errors]
    if guess and errors:
        raise HTTPException(422, f"the config of {app_name} has errors: " + "; ".join(errors[:5]))
    raise HTTPException(404, f"no app {app_name!r} in {directory}")


def _split(text: str | None) -> list[str] | None:
    if text is None or not text.strip():
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def preview_release(spec: Any, version: str | None, hosts: list[str] | None,
                    batches: list[str] | None, skip_fort: bool) -> dict[str, Any]:
    """The plan preview, or ``TarsError`` naming what is wrong with the input."""
    from tars_operators.errors import PlanError
    from tars_operators.plan.preview import preview
    from tars_operators.plan.ramp import plan_release
    from tars_operators.plan.sizes import parse_size
    from tars_operators.plan.windows import window_status
    from tars_operators.remote.validate import validate_version

    resolved = version
    if version is not None:
        if version == "latest" and spec.config.artifact.latest_url:
            from tars_operators.hooks.artifacts import resolve_latest

            resolved = resolve_latest(spec)
        validate_version(resolved, spec.config.artifact.version_pattern)
    sizes = [parse_size(b) for b in batches] if batches else None
    plan = plan_release(spec, hosts=hosts, batches=sizes, skip_fort=skip_fort)
    slots = spec.default_plan.stage_names
    if len(plan.stages) > len(slots):
        raise PlanError(
            f"batches: this plan needs {len(plan.stages)} stages but the DAG has {len(slots)} "
            f"({', '.join(slots)}), from the app's strategy; use fewer, larger batches"
        )
    now = datetime.now(timezone.utc)
    data = preview(spec, plan, window_status(spec.config.schedule, now), version=resolved, now=now)
    return {**data, "requested_version": version, "dag_id": f"tars_deploy__{spec.name}"}


@app.get("/apps/{app_name}/plan")
def get_plan(app_name: str, user: GetUserDep, version: str | None = None,
             hosts: str | None = None, batches: str | None = None,
             skip_fort: bool = False) -> dict[str, Any]:
    """Preview a release as ``prepare`` would plan it; 400 with the reason on bad input."""
    from tars_operators.errors import TarsError

    _known_app(app_name)
    spec = load_app_spec(app_name)
    try:
        return preview_release(spec, version, _split(hosts), _split(batches), skip_fort)
    except TarsError as exc:
        raise HTTPException(400, str(exc)) from None
