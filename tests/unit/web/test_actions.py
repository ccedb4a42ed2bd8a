"""The action routes (answer an approval, roll back) on the plugin's real FastAPI app.

Stood in: Airflow's login (a user), its auth manager (who may edit), the DB session (the app's
DAG exists) and the Variables (the audit trail). The rollback's conf is checked by the real
rollback DAG's params; Airflow's own HITL and trigger functions are stood in only where they
would write to the database. The real path is in tests/e2e/test_browser_actions.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

import airflow.api_fastapi.app as airflow_app
from airflow.api_fastapi.common.db.common import _get_session
from airflow.api_fastapi.core_api.security import get_user
from airflow.models.dag import DagModel
from tars_operators import api
from tars_operators.factory.builder import build_rollback_dag
from tars_operators.web import actions
from tests.unit.factory.test_dag_shape import spec_for

pytestmark = pytest.mark.unit

RUN = "/apps/demo/runs/tars_deploy__demo/manual__1"


class User:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_name(self) -> str:
        return self.name

    def get_id(self) -> str:
        return self.name


class Auth:
    """Viewers may read (GET) everything and change nothing; editors may do anything."""

    def is_authorized_dag(self, *, method: str, access_entity: Any, details: Any,
                          user: User) -> bool:
        return method == "GET" or user.name.startswith("editor")


class Session:
    """The app's DAGs exist (and belong to no team)."""

    def scalar(self, stmt: Any) -> Any:
        text = str(stmt).lower()
        if "team" in text:
            return None
        if stmt.column_descriptions[0]["type"] is DagModel:  # trigger_dag_run's own lookup
            return SimpleNamespace(has_import_errors=False, allowed_run_types=None)
        return "tars_deploy__demo"

    def execute(self, stmt: Any) -> list[Any]:
        return []


class Variables:
    def __init__(self) -> None:
        self.store: dict[str, str] = {}
        self.sessions: list[Any] = []

    def get(self, key: str, default_var: Any = None) -> Any:
        return self.store.get(key, default_var)

    def set(self, key: str, value: str, session: Any = None) -> None:
        self.store[key] = value
        self.sessions.append(session)

    def audit(self) -> list[dict[str, Any]]:
        return json.loads(self.store.get("tars_audit__demo", "[]"))


@pytest.fixture
def variables(monkeypatch: pytest.MonkeyPatch) -> Variables:
    store = Variables()
    monkeypatch.setattr(api, "_variables", lambda: store)
    monkeypatch.setattr(airflow_app, "get_auth_manager", Auth)
    return store


def as_user(name: str) -> Iterator[TestClient]:
    api.app.dependency_overrides[get_user] = lambda: User(name)
    api.app.dependency_overrides[_get_session] = Session
    try:
        yield TestClient(api.app, root_path="/tars")
    finally:
        api.app.dependency_overrides.pop(get_user, None)
        api.app.dependency_overrides.pop(_get_session, None)


@pytest.fixture
def viewer(variables: Variables) -> Iterator[TestClient]:
    yield from as_user("viewer_vic")


@pytest.fixture
def editor(variables: Variables) -> Iterator[TestClient]:
    yield from as_user("editor_eve")


@pytest.fixture(scope="module")
def rollback_dag(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from airflow.serialization.serialized_objects import DagSerialization

    spec = spec_for(Path(tmp_path_factory.mktemp("actions")), hosts=3)
    return DagSerialization.from_dict(DagSerialization.to_dict(build_rollback_dag(spec)))


ANSWER = {"option": "Continue", "reason": "fort looks fine"}
ROLLBACK = {"reason": "errors up 3x", "ticket": "INC-7", "hosts": ["h01"]}


@pytest.mark.parametrize("method, path, body", [
    ("POST", f"{RUN}/approvals/fort.approve", ANSWER),
    ("POST", "/apps/demo/rollback", ROLLBACK),
    ("POST", "/apps/demo/brake", {"reason": "no"}),
    ("DELETE", "/apps/demo/brake", None),
])
def test_a_viewer_is_refused_every_action_and_nothing_is_audited(
        viewer: TestClient, variables: Variables, method: str, path: str, body: Any) -> None:
    r = viewer.request(method, path, json=body)
    assert r.status_code == 403, r.text
    assert r.json()["detail"] == ("viewer_vic may not change releases of demo: that needs edit "
                                  "permission on the runs of DAG tars_deploy__demo")
    assert variables.audit() == [] and "tars_brake__demo" not in variables.store


def test_the_release_tab_tells_a_viewer_it_may_not_answer(viewer: TestClient) -> None:
    r = viewer.get(f"{RUN}/approvals")
    assert r.status_code == 200 and r.json() == {"can_edit": False, "approvals": []}


def test_the_release_tab_tells_an_editor_it_may_answer(editor: TestClient) -> None:
    assert editor.get(f"{RUN}/approvals").json()["can_edit"] is True


def test_an_answer_goes_through_airflows_hitl_update_and_is_audited(
        editor: TestClient, variables: Variables, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime, timezone

    import airflow.api_fastapi.core_api.routes.public.hitl as hitl

    calls: list[dict[str, Any]] = []

    def update(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return SimpleNamespace(chosen_options=kwargs["update_hitl_detail_payload"].chosen_options,
                               responded_at=datetime(2026, 11, 29, tzinfo=timezone.utc))

    monkeypatch.setattr(hitl, "update_hitl_detail", update)
    r = editor.post(f"{RUN}/approvals/fort.approve", json=ANSWER)
    assert r.status_code == 200, r.text
    assert r.json()["chosen_options"] == ["Continue"]
    [call] = calls
    assert (call["dag_id"], call["dag_run_id"], call["task_id"], call["map_index"]) == (
        "tars_deploy__demo", "manual__1", "fort.approve", -1)
    assert call["user"].get_name() == "editor_eve"
    [entry] = variables.audit()
    # In the request's session: committed with the answer, or not at all.
    assert variables.sessions == [call["session"]]
    assert {k: entry[k] for k in ("event", "by", "reason", "option", "run_id", "task_id")} == {
        "event": "approval answered", "by": "editor_eve", "reason": "fort looks fine",
        "option": "Continue", "run_id": "manual__1", "task_id": "fort.approve"}


def test_an_approval_answered_already_is_409_and_not_audited(
        editor: TestClient, variables: Variables, monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow.api_fastapi.core_api.routes.public.hitl as hitl

    def answered(**kwargs: Any) -> Any:
        raise HTTPException(409, "Human-in-the-loop detail has already been updated")

    monkeypatch.setattr(hitl, "update_hitl_detail", answered)
    r = editor.post(f"{RUN}/approvals/fort.approve", json=ANSWER)
    assert r.status_code == 409 and "already been updated" in r.json()["detail"]
    assert variables.audit() == []


@pytest.mark.parametrize("body, message", [
    ({"reason": "x", "hosts": ["web99"]}, "Invalid input for param hosts: 'web99' is not one of"),
    ({"reason": "x", "version": "1.0.0; rm -rf /"}, "Invalid input for param version"),
])
def test_a_bad_rollback_conf_is_400_with_the_params_message_and_starts_nothing(
        editor: TestClient, variables: Variables, rollback_dag: Any,
        monkeypatch: pytest.MonkeyPatch, body: dict[str, Any], message: str) -> None:
    asked: list[str] = []

    class Bag:
        def get_latest_version_of_dag(self, dag_id: str, session: Any) -> Any:
            asked.append(dag_id)
            return rollback_dag

    monkeypatch.setattr(actions, "_dag_bag", lambda request: Bag())
    r = editor.post("/apps/demo/rollback", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith(message)
    assert asked == ["tars_rollback__demo"] and variables.audit() == []


def test_a_rollback_without_reason_is_refused_before_airflow(editor: TestClient) -> None:
    r = editor.post("/apps/demo/rollback", json={"reason": ""})
    assert r.status_code == 422


def test_a_rollback_triggers_the_rollback_dag_as_its_user_and_is_audited(
        editor: TestClient, variables: Variables, monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow.api_fastapi.core_api.routes.public.dag_run as dag_run

    calls: list[dict[str, Any]] = []

    def trigger(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return SimpleNamespace(run_id="manual__2026-11-29T23:00:00+00:00")

    monkeypatch.setattr(dag_run, "trigger_dag_run", trigger)
    monkeypatch.setattr(actions, "_dag_bag", lambda request: "bag")
    r = editor.post("/apps/demo/rollback", json=ROLLBACK)
    assert r.status_code == 200, r.text
    assert r.json() == {"app": "demo", "dag_id": "tars_rollback__demo",
                        "run_id": "manual__2026-11-29T23:00:00+00:00"}
    [call] = calls
    assert call["dag_id"] == "tars_rollback__demo" and call["user"].get_name() == "editor_eve"
    assert call["body"].conf == {"reason": "errors up 3x", "ticket": "INC-7", "hosts": ["h01"],
                                 "version": None}
    [entry] = variables.audit()
    assert (entry["event"], entry["by"], entry["reason"], entry["run_id"], entry["hosts"]) == (
        "rollback requested", "editor_eve", "errors up 3x",
        "manual__2026-11-29T23:00:00+00:00", ["h01"])


def test_a_user_who_may_edit_the_app_but_not_trigger_the_rollback_dag_is_refused(
        variables: Variables, monkeypatch: pytest.MonkeyPatch) -> None:
    class NoTrigger(Auth):
        def is_authorized_dag(self, *, method: str, access_entity: Any, details: Any,
                              user: User) -> bool:
            return not (method == "POST" and details.id == "tars_rollback__demo")

    monkeypatch.setattr(airflow_app, "get_auth_manager", NoTrigger)
    for client in as_user("editor_eve"):
        r = client.post("/apps/demo/rollback", json=ROLLBACK)
        assert r.status_code == 403
        assert r.json()["detail"] == ("editor_eve may not roll demo back: that needs POST "
                                      "permission on run of DAG tars_rollback__demo")
    assert variables.audit() == []


def test_an_answer_waits_until_its_task_has_stood_parked(
        editor: TestClient, variables: Variables, monkeypatch: pytest.MonkeyPatch) -> None:
    # Airflow 3.3.2 fails an approval answered as its task parks (client.settle): the action
    # holds the answer while the task runs, then until the question is SETTLE_SECONDS old.
    from datetime import datetime, timezone

    import airflow.api_fastapi.core_api.routes.public.hitl as hitl
    from tars_operators.client import settle

    monkeypatch.setattr(settle, "SETTLE_SECONDS", 0.6)
    asked = datetime.now(timezone.utc)
    looks = [[("running", asked)], [("awaiting_input", asked)]]
    seen: list[Any] = []

    def execute(self: Session, stmt: Any) -> list[Any]:
        if "hitl_detail" not in str(stmt).lower():
            return []
        seen.append(time.monotonic())
        return looks.pop(0) if len(looks) > 1 else looks[0]

    answered: list[float] = []

    def update(**kwargs: Any) -> Any:
        answered.append(time.monotonic())
        return SimpleNamespace(chosen_options=["Continue"], responded_at=asked)

    monkeypatch.setattr(Session, "execute", execute)
    monkeypatch.setattr(hitl, "update_hitl_detail", update)
    r = editor.post(f"{RUN}/approvals/fort.approve", json=ANSWER)
    assert r.status_code == 200, r.text
    assert len(seen) >= 3 and answered[0] > seen[-1]  # running, parked but fresh, settled
    assert (datetime.now(timezone.utc) - asked).total_seconds() >= 0.6
