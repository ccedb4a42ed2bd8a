"""The api-server guard: a trigger whose conf the form does not know gets 400, nothing else changes.

The downstream app stands in for Airflow's handler (the real one is exercised by
``tests/e2e/test_refusals.py``); the DAG's param names come from an injected lookup.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from tars_operators.conf_guard import MAX_BODY, RunConfGuard

pytestmark = pytest.mark.unit

FORM = ["dry_run", "reason", "version"]


@pytest.fixture
def seen() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def client(seen: list[dict[str, Any]]) -> TestClient:
    app = FastAPI()

    @app.post("/api/v2/dags/{dag_id}/dagRuns")
    async def trigger(dag_id: str, request: Request) -> dict[str, Any]:
        body = await request.body()
        seen.append({"dag_id": dag_id, "body": body})
        return {"dag_run_id": "manual__1"}

    @app.get("/api/v2/dags/{dag_id}/dagRuns")
    async def runs(dag_id: str) -> dict[str, Any]:
        return {"dag_runs": []}

    async def known(scope: Any, dag_id: str) -> list[str] | None:
        return None if dag_id == "tars_deploy__secret" else FORM

    app.add_middleware(RunConfGuard, known_keys=known)
    return TestClient(app)


def trigger(client: TestClient, dag_id: str, conf: Any, **extra: Any) -> Any:
    return client.post(f"/api/v2/dags/{dag_id}/dagRuns",
                       json={"logical_date": None, "conf": conf, **extra})


def test_unknown_key_is_refused_before_the_handler(client: TestClient, seen: list) -> None:
    r = trigger(client, "tars_deploy__demo", {"version": "2.0.0", "dryrun": True})
    assert r.status_code == 400
    assert r.json() == {"detail": "conf: unknown key 'dryrun' (did you mean 'dry_run'?); "
                                  "tars_deploy__demo knows: dry_run, reason, version"}
    assert seen == []


def test_a_version_with_a_newline_is_refused(client: TestClient, seen: list) -> None:
    r = trigger(client, "tars_canary__demo", {"version": "2.0.0\n"})
    assert r.status_code == 400 and "params.version" in r.json()["detail"]
    assert seen == []


def test_a_good_conf_reaches_the_handler_byte_for_byte(client: TestClient, seen: list) -> None:
    body = json.dumps({"logical_date": None, "conf": {"version": "2.0.0", "dry_run": True},
                       "note": "é" * 5000}).encode()
    r = client.post("/api/v2/dags/tars_deploy__demo/dagRuns", content=body,
                    headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert seen == [{"dag_id": "tars_deploy__demo", "body": body}]


@pytest.mark.parametrize(("dag_id", "body"), [
    ("other_dag", {"conf": {"dryrun": True}}),           # not a Tars DAG: Airflow's rules
    ("tars_deploy__secret", {"conf": {"dryrun": True}}),  # lookup says no (no access, no DAG)
    ("tars_deploy__demo", {"conf": "not an object"}),     # Airflow's 422 says why
    ("tars_deploy__demo", {"logical_date": None}),        # no conf at all
])
def test_everything_else_is_left_to_airflow(client: TestClient, seen: list, dag_id: str,
                                            body: dict[str, Any]) -> None:
    r = client.post(f"/api/v2/dags/{dag_id}/dagRuns", json=body)
    assert r.status_code == 200
    assert [s["dag_id"] for s in seen] == [dag_id]


def test_malformed_json_and_other_methods_pass(client: TestClient, seen: list) -> None:
    r = client.post("/api/v2/dags/tars_deploy__demo/dagRuns", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert r.status_code == 200 and seen[0]["body"] == b"{not json"
    assert client.get("/api/v2/dags/tars_deploy__demo/dagRuns").json() == {"dag_runs": []}


def test_a_huge_body_is_not_inspected(client: TestClient, seen: list) -> None:
    r = trigger(client, "tars_deploy__demo", {"dryrun": True}, note="x" * (MAX_BODY + 1))
    assert r.status_code == 200 and len(seen) == 1
