"""The Apps (nav) and App (tab on ``tars_deploy__<app>``) views: their pages and JSON.

The pages are templates filled by their scripts from the JSON routes; the JSON is built from
what Tars recorded in Airflow's database (``web.records`` → ``web.fleet``), the brake and audit
Variables, and the app's config (hosts, groups, deploy window). No SSH login per view.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from tars_operators.release.brake import audit_key, brake_key, parse_brake
from tars_operators.web import fleet, onhost, readiness, records
from tars_operators.web.pages import render

if TYPE_CHECKING:
    from tars_operators.config.spec import AppSpec

SpecLoader = Callable[[str], "AppSpec"]  # app → its spec; raises (HTTPException) when it cannot


def apps_page(base: str) -> HTMLResponse:
    return render("apps.html.j2", base=base)


def app_page(base: str, app: str) -> HTMLResponse:
    """``app`` is any text (escaped); the script asks the server, which checks it."""
    return render("app.html.j2", base=base, app=app)


def app_from_dag_id(dag_id: str) -> str:
    """The app of a Tars DAG id (``tars_deploy__demo`` → ``demo``); '' for another DAG."""
    for prefix in (*records.PREFIXES, records.INSPECT_PREFIX):
        if dag_id.startswith(prefix):
            return dag_id.removeprefix(prefix)
    return ""


def _spec(load: SpecLoader, app: str) -> tuple[AppSpec | None, str]:
    try:
        return load(app), ""
    except Exception as exc:  # noqa: BLE001 - a broken config must not hide the recorded state
        return None, str(getattr(exc, "detail", exc))


def _brake(variables: Any, app: str) -> dict[str, str] | None:
    brake = parse_brake(variables.get(brake_key(app), default_var=None))
    return asdict(brake) if brake else None


def _window(spec: AppSpec | None) -> tuple[bool, str] | None:
    from tars_operators.plan.windows import window_status

    if spec is None:
        return None
    status = window_status(spec.config.schedule, datetime.now(timezone.utc))
    return status.open, status.reason


def _hosts(spec: AppSpec | None, recs: list[fleet.HostRecord]) -> list[tuple[str, str]]:
    """The app's hosts from its config; without one, the hosts its tasks recorded."""
    if spec is not None:
        return [(h.name, h.group or "") for h in spec.hosts]
    return [(name, "") for name in sorted({r.host for r in recs})]


def app_summary(session: Session, variables: Any, load: SpecLoader, app: str) -> dict[str, Any]:
    """One line of the Apps view."""
    runs, recs = records.read_app(session, app)
    spec, _ = _spec(load, app)
    rows = fleet.host_rows(_hosts(spec, recs), recs)
    row = fleet.app_row(app, rows, runs, _brake(variables, app), _window(spec))
    canary = records.next_canary(session, app)
    return {**asdict(row), "versions_text": fleet.versions_text(rows),
            "next_canary": canary.isoformat(timespec="seconds") if canary else ""}


def app_detail(session: Session, variables: Any, load: SpecLoader, app: str) -> dict[str, Any]:
    """The App view: hosts, release history, audit trail, brake, window."""
    runs, recs = records.read_app(session, app)
    spec, config_error = _spec(load, app)
    rows = fleet.host_rows(_hosts(spec, recs), recs)
    raw = variables.get(audit_key(app), default_var=None)
    try:
        audit = json.loads(raw) if raw else []
    except ValueError:
        audit = []
    return {
        "app": app,
        "summary": {**asdict(fleet.app_row(app, rows, runs, _brake(variables, app), _window(spec))),
                    "versions_text": fleet.versions_text(rows)},
        **_on_hosts(session, spec, app, rows),
        "history": [asdict(h) for h in fleet.history_rows(runs)],
        "audit": list(reversed(audit if isinstance(audit, list) else [])),
        "config_error": config_error,
    }


def _on_hosts(session: Session, spec: AppSpec | None, app: str,
              rows: list[fleet.HostRow]) -> dict[str, Any]:
    """The host rows with what the hosts said at the last refresh and the LB state (live
    when the LB's API needs no SSH, else as of that refresh)."""
    from tars_operators.web.livelb import live_lb

    inspect = records.read_inspect(session, app)
    live = live_lb(spec) if spec is not None else None
    by_name = {h.name: h for h in spec.hosts} if spec is not None else {}
    hosts = [(r.host, r.group, by_name[r.host].vars if r.host in by_name else {}) for r in rows]
    extra = onhost.on_host_rows(hosts, {r.host: (r.version, r.at) for r in rows}, inspect, live)
    ready_column, ready = _ready(session, spec, app, rows, inspect)
    return {
        "hosts": [{**asdict(r), **asdict(o), **asdict(c)} for r, o, c in zip(rows, extra, ready)],
        "ready_column": ready_column,
        "refresh": inspect.summary() if inspect else None,
        "lb_note": live.why if live else "the app's config could not be read",
    }


def _ready(session: Session, spec: AppSpec | None, app: str, rows: list[fleet.HostRow],
           inspect: onhost.InspectRecord | None) -> tuple[bool, list[readiness.ReadyCell]]:
    """The Ready column (shown when the app has ``runtime.requires``; without its config,
    when a run recorded readiness) and its cells, as of the newer of the last release's
    preflight and the last refresh."""
    from tars_operators.assembly.requirements import runtime_for

    by_name = {h.name: h for h in spec.hosts} if spec is not None else {}
    required = [(r.host, spec is None or (r.host in by_name and bool(
        runtime_for(spec, by_name[r.host]).requires))) for r in rows]
    if spec is not None and not any(need for _, need in required):
        return False, readiness.ready_cells(required, [])  # no runtime: no column, no query
    sources = [records.read_readiness(session, app), readiness.from_refresh(inspect)]
    shown = spec is not None or any(s is not None and s.hosts for s in sources)
    return shown, readiness.ready_cells(required, sources)


def run_page(base: str, dag_id: str, run_id: str) -> HTMLResponse:
    """The Release tab of a run (any text, escaped; the script asks the server, which checks)."""
    return render("run.html.j2", base=base, app=app_from_dag_id(dag_id), dag_id=dag_id,
                  run_id=run_id)


def run_detail(session: Session, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The Release tab: the run's header and plan, then each host's steps (None: no such run)."""
    run, recs = records.read_run(session, dag_id, run_id)
    if run is None:
        return None
    return {"run": fleet.run_summary(run),
            "hosts": [asdict(h) for h in fleet.run_hosts(run, recs)]}
