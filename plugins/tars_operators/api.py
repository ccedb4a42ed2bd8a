"""Tars's REST routes inside the Airflow api-server (mounted at ``/tars``).

Every route needs an authenticated Airflow user. An app's brake, audit trail and plan need
permission to read runs of its deploy DAG, changing the brake permission to edit them (the
role that may release may also stop a release); an app Airflow has no deploy DAG for is 404.
``GET /tars/apps/{app}/plan`` previews a release (stages, capacity floor, deploy window) and
refuses bad input with a 400 saying why, so a client can stop before triggering a run.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep
from tars_operators.release.brake import (
    append_audit, audit_entry, audit_key, brake_key, brake_value, parse_brake,
)
from tars_operators.release.events import brake_changed
from tars_operators.release.machine import Brake
from tars_operators.web.pages import SecurityHeaders, static_response

if TYPE_CHECKING:
    from tars_operators.config.spec import AppSpec
    from tars_operators.plan.request import ReleaseRequest

log = logging.getLogger(__name__)
app = FastAPI(title="Tars", description="Brake, audit trail and plan preview of Tars releases")
# CSP, nosniff and Referrer-Policy on every Tars response: pages, static files, JSON, errors.
app.add_middleware(SecurityHeaders)


def _variables() -> Any:
    from airflow.models.variable import Variable

    return Variable


def deploy_dag_id(app_name: str) -> str:
    return f"tars_deploy__{app_name}"


def _authorize(app_name: str, user: Any, method: Literal["GET", "PUT"], session: Session) -> None:
    """403 unless the user may read (GET) or edit (PUT) runs of the app's deploy DAG.

    The same question Airflow's own ``/dags/{dag_id}/dagRuns`` routes ask, team included, so
    whoever may see (or trigger) an app's releases in the Airflow UI may see (or brake) them here.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity, DagDetails,
    )
    from airflow.models.dag import DagModel

    dag_id = deploy_dag_id(app_name)
    details = DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id, session=session))
    ok = get_auth_manager().is_authorized_dag(
        method=method, access_entity=DagAccessEntity.RUN, details=details, user=user,
    )
    if not ok:
        verb, perm = ("read", "read") if method == "GET" else ("change", "edit")
        raise HTTPException(403, f"{user.get_name()} may not {verb} releases of {app_name}: "
                                 f"that needs {perm} permission on the runs of DAG {dag_id}")


def _known_app(app_name: str, user: Any, method: Literal["GET", "PUT"], session: Session) -> None:
    """400 for a malformed name, 403 without permission, 404 when Airflow has no deploy DAG.

    Permission comes before existence (as on Airflow's own DAG routes), so a user who may not
    read an app cannot probe which apps exist. The DAG lookup is one indexed query: an unknown
    app is refused without reading any config file. A stale DAG (its config removed) still
    counts, so its brake and audit trail stay readable.
    """
    from airflow.models.dag import DagModel

    if not app_name.replace("_", "").isalnum() or not app_name[:1].isalpha():
        raise HTTPException(400, f"not an app name: {app_name!r}")
    _authorize(app_name, user, method, session)
    dag_id = deploy_dag_id(app_name)
    if session.scalar(select(DagModel.dag_id).where(DagModel.dag_id == dag_id)) is None:
        raise HTTPException(404, f"no app {app_name!r}: Airflow has no DAG {dag_id} "
                                 "(is its config in the config directory, and parsed?)")


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
def get_brake(app_name: str, user: GetUserDep, session: SessionDep) -> dict[str, Any]:
    _known_app(app_name, user, "GET", session)
    return _brake_state(app_name)


def _brake_state(app_name: str) -> dict[str, Any]:
    brake = parse_brake(_variables().get(brake_key(app_name), default_var=None))
    return {"app": app_name, "brake": brake.__dict__ if brake else None}


@app.post("/apps/{app_name}/brake")
def pull_brake(app_name: str, body: BrakeBody, user: GetUserDep,
               session: SessionDep) -> dict[str, Any]:
    _known_app(app_name, user, "PUT", session)
    who = user.get_name()
    _variables().set(brake_key(app_name), brake_value(who, body.reason, body.action))
    _audit(app_name, audit_entry("brake pulled", who, body.reason, action=body.action))
    brake_changed(lambda: load_app_spec(app_name), True, who, body.reason, body.action)
    state = _brake_state(app_name)
    _show_brake_in_runs(app_name, Brake(**state["brake"]), user, session)
    return state


@app.delete("/apps/{app_name}/brake")
def release_brake(app_name: str, user: GetUserDep, session: SessionDep,
                  reason: str = "") -> dict[str, Any]:
    _known_app(app_name, user, "PUT", session)
    V = _variables()
    was = parse_brake(V.get(brake_key(app_name), default_var=None))
    V.delete(brake_key(app_name))
    if was is not None:
        _audit(app_name, audit_entry("brake released", user.get_name(), reason,
                                     was_by=was.by, was_reason=was.reason))
        brake_changed(lambda: load_app_spec(app_name), False, user.get_name(), reason)
    _show_brake_in_runs(app_name, None, user, session)
    return {"app": app_name, "brake": None, "was": was.__dict__ if was else None}


def _show_brake_in_runs(app_name: str, brake: Brake | None, user: Any,
                        session: Session) -> None:
    """Set the brake part of the note of every queued or running release of the app.

    The tasks only see the brake when they next look (a gate, a host's next step), so the
    route that changes it updates the notes at once, the way Airflow's own PATCH of a run
    note does (same session, committed with the request).
    """
    from airflow.api_fastapi.core_api.services.public.dag_run import patch_dag_run_note
    from airflow.models.dagrun import DagRun
    from airflow.utils.state import DagRunState

    from tars_operators.release.notes import fit_note, with_brake

    runs = session.scalars(select(DagRun).where(
        DagRun.dag_id == deploy_dag_id(app_name),
        DagRun.state.in_([DagRunState.RUNNING, DagRunState.QUEUED]),
    )).all()
    for run in runs:
        note = fit_note(with_brake(run.note, brake))
        if note != (run.note or ""):
            patch_dag_run_note(dag_run=run, note=note, user=user)


@app.get("/apps/{app_name}/audit")
def get_audit(app_name: str, user: GetUserDep, session: SessionDep) -> dict[str, Any]:
    _known_app(app_name, user, "GET", session)
    raw = _variables().get(audit_key(app_name), default_var=None)
    return {"app": app_name, "audit": json.loads(raw) if raw else []}


# ---- plan preview ----------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def config_dir() -> Path:
    """Where the app configs are: ``$TARS_CONFIG_DIR`` like the DAG file, else configs/apps."""
    return Path(os.environ.get("TARS_CONFIG_DIR", REPO / "configs" / "apps"))


def load_app_spec(app_name: str) -> Any:
    """The app's spec as the DAG file finds it: 422 broken config, 404 no config for it.

    ``config/finder.py`` reads only ``<app>.yaml`` when it defines the app, and remembers the
    file of an app defined elsewhere, so a request never parses the whole directory again.
    """
    from tars_operators.config.finder import find_app

    directory = config_dir()
    found = find_app(directory, app_name, base_dir=REPO)
    if found.spec is not None:
        return found.spec
    if found.errors:
        raise HTTPException(422, f"the config of {app_name} has errors: "
                                 + "; ".join(found.errors[:5]))
    more = f"; {found.broken} file(s) there have errors" if found.broken else ""
    raise HTTPException(404, f"no config of app {app_name!r} in {directory}{more}")


def preview_release(spec: AppSpec, request: ReleaseRequest) -> dict[str, Any]:
    """The plan preview of a ``ReleaseRequest``, or ``TarsError`` naming what is wrong with it."""
    from tars_operators.plan.preview import preview
    from tars_operators.plan.request import plan_request
    from tars_operators.plan.windows import window_status

    plan = plan_request(spec, request)
    now = datetime.now(timezone.utc)
    data = preview(spec, plan, window_status(spec.config.schedule, now), now=now)
    return {**data, "requested_version": request.version, "dag_id": f"tars_deploy__{spec.name}"}


@app.get("/apps/{app_name}/plan")
def get_plan(app_name: str, user: GetUserDep, session: SessionDep, version: str | None = None,
             hosts: str | None = None, batches: str | None = None, skip_fort: bool = False,
             skip_fort_reason: str = "", force: bool = False, force_reason: str = "",
             reason: str = "", ticket: str = "") -> dict[str, Any]:
    """Preview a release as ``prepare`` would plan it; 400 with the reason on bad input."""
    from tars_operators.errors import TarsError
    from tars_operators.plan.request import ReleaseRequest

    _known_app(app_name, user, "GET", session)
    spec = load_app_spec(app_name)
    request = ReleaseRequest(
        version=version, hosts=hosts, batches=batches, skip_fort=skip_fort,
        skip_fort_reason=skip_fort_reason, force=force, force_reason=force_reason,
        reason=reason, ticket=ticket, who=user.get_name(),
    )
    try:
        return preview_release(spec, request)
    except TarsError as exc:
        raise HTTPException(400, str(exc)) from None


# ---- views: Apps (nav) and App (tab on the deploy DAG) -----------------------------------

@app.get("/views/apps", response_class=HTMLResponse)
def apps_view(request: Request, user: GetUserDep) -> HTMLResponse:
    """Every app the user may read: versions across hosts, running release, brake, window."""
    from tars_operators.web.views import apps_page

    return apps_page(base=request.scope.get("root_path", ""))


@app.get("/views/app", response_class=HTMLResponse)
def app_view(request: Request, user: GetUserDep,
             app_name: str = Query("", alias="app", max_length=100),
             dag_id: str = Query("", max_length=250)) -> HTMLResponse:
    """One app's hosts, release history and audit trail (the tab passes ``dag_id``)."""
    from tars_operators.web.views import app_from_dag_id, app_page

    return app_page(base=request.scope.get("root_path", ""),
                    app=app_name or app_from_dag_id(dag_id))


@app.get("/apps")
def list_apps(user: GetUserDep, session: SessionDep) -> dict[str, Any]:
    """The Apps view's rows: only apps whose deploy runs the user may read."""
    from tars_operators.web.records import deploy_apps
    from tars_operators.web.views import app_summary

    rows = []
    for name in deploy_apps(session):
        try:
            _authorize(name, user, "GET", session)
        except HTTPException:
            continue
        rows.append(app_summary(session, _variables(), load_app_spec, name))
    return {"apps": rows}


@app.get("/apps/{app_name}/fleet")
def get_fleet(app_name: str, user: GetUserDep, session: SessionDep) -> dict[str, Any]:
    """The App view: one row per host, the release history and the audit trail."""
    from tars_operators.web.views import app_detail

    _known_app(app_name, user, "GET", session)
    try:  # the page offers the brake only to who may pull it (the brake routes check again)
        _authorize(app_name, user, "PUT", session)
        can_edit = True
    except HTTPException:
        can_edit = False
    return {**app_detail(session, _variables(), load_app_spec, app_name), "can_edit": can_edit}


@app.post("/apps/{app_name}/refresh")
def refresh_from_hosts(app_name: str, user: GetUserDep, session: SessionDep) -> dict[str, Any]:
    """Read every host of the app now: starts a run of ``tars_inspect__<app>`` (edit permission
    on the app's runs; the run already queued or running when there is one)."""
    from tars_operators.web.refresh import start_refresh

    _known_app(app_name, user, "PUT", session)
    return start_refresh(session, app_name, user.get_name())


@app.get("/views/run", response_class=HTMLResponse)
def run_view(request: Request, user: GetUserDep, dag_id: str = Query("", max_length=250),
             run_id: str = Query("", max_length=250)) -> HTMLResponse:
    """The Release tab of a run: stages, hosts and their steps, live while it runs."""
    from tars_operators.web.views import run_page

    return run_page(request.scope.get("root_path", ""), dag_id, run_id)


@app.get("/apps/{app_name}/runs/{dag_id}/{run_id}")
def get_run(app_name: str, dag_id: str, run_id: str, user: GetUserDep,
            session: SessionDep) -> dict[str, Any]:
    """One release run's stages and hosts with their steps (read permission on the app)."""
    from tars_operators.web.views import app_from_dag_id, run_detail

    _known_app(app_name, user, "GET", session)
    if app_from_dag_id(dag_id) != app_name:
        raise HTTPException(400, f"{dag_id} is not a DAG of app {app_name}")
    detail = run_detail(session, dag_id, run_id)
    if detail is None:
        raise HTTPException(404, f"no run {run_id!r} of {dag_id}")
    return detail


# Actions from the views (answer an approval, roll back): their own module, same checks.
from tars_operators.web.actions import router as _actions  # noqa: E402 - needs the helpers above

app.include_router(_actions)
