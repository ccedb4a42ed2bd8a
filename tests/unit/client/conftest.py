"""A fake Airflow REST API (httpx.MockTransport) for the ``tars`` client commands."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tars_operators.client import commands
from tars_operators.client.api import Airflow

URL = "http://airflow.test:8080"


DEPLOY_FORM = ("version", "reason", "ticket", "dry_run", "hosts", "batches", "skip_fort",
               "skip_fort_reason", "force", "force_reason")


def form(*keys: str) -> dict[str, Any]:
    """A DAG's ``params`` as ``GET /api/v2/dags/{id}/details`` shows them."""
    return {k: {"value": None, "schema": {}, "description": None, "source": "dag"} for k in keys}


def ti(task_id: str, state: str | None, map_index: int = -1) -> dict[str, Any]:
    return {"task_id": task_id, "map_index": map_index, "state": state}


@dataclass
class FakeAirflow:
    """Answers the routes the client uses; each GET of a run pops the next scripted step."""

    dags: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "tars_deploy__demo": {"dag_id": "tars_deploy__demo", "is_paused": False,
                              "params": form(*DEPLOY_FORM)},
        "tars_rollback__demo": {"dag_id": "tars_rollback__demo", "is_paused": False,
                                "params": form("reason", "ticket", "hosts")},
        "tars_deploy__shop": {"dag_id": "tars_deploy__shop", "is_paused": False},
        "other_dag": {"dag_id": "other_dag", "is_paused": False},
    })
    # (run, task instances) returned by successive polls; the last one repeats
    steps: list[tuple[dict[str, Any], list[dict[str, Any]]]] = field(default_factory=list)
    plan_error: str | None = None
    trigger_error: tuple[int, Any] | None = None
    login_error: bool = False
    approvals: list[dict[str, Any]] = field(default_factory=list)
    parking: list[str] = field(default_factory=list)  # task states shown before the stored one
    brake: dict[str, Any] | None = None
    window_open: bool = True
    active: list[dict[str, Any]] = field(default_factory=list)  # runs already in progress
    requests: list[httpx.Request] = field(default_factory=list)

    def calls(self, method: str, pattern: str) -> list[httpx.Request]:
        return [r for r in self.requests
                if r.method == method and re.fullmatch(pattern, r.url.path)]

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path, request.method
        if path == "/auth/token":
            if self.login_error:
                return httpx.Response(401, json={"detail": "Invalid credentials"})
            return httpx.Response(201, json={"access_token": "jwt"})
        if request.headers.get("Authorization") != "Bearer jwt":
            return httpx.Response(401, json={"detail": "Not authenticated"})
        for (verb, regex), route in ROUTES.items():
            m = re.fullmatch(regex, path)
            if verb == method and m:
                return route(self, request, *m.groups())
        return httpx.Response(404, json={"detail": "Not Found"})

    def get_dag(self, request: httpx.Request, dag_id: str) -> httpx.Response:
        if dag_id not in self.dags:
            return httpx.Response(404, json={"detail": f"The Dag with ID: `{dag_id}` was not found"})
        return httpx.Response(200, json=self.dags[dag_id])

    def get_dags(self, request: httpx.Request) -> httpx.Response:
        # dag_id_pattern is SQL ILIKE: '_' matches any character, so the client filters again
        like = request.url.params.get("dag_id_pattern", "").replace("_", ".")
        found = [d for i, d in self.dags.items() if re.search(like, i, re.I)]
        return httpx.Response(200, json={"dags": found, "total_entries": len(found)})

    def patch_dag(self, request: httpx.Request, dag_id: str) -> httpx.Response:
        self.dags[dag_id].update(json.loads(request.content))
        return httpx.Response(200, json=self.dags[dag_id])

    def plan(self, request: httpx.Request, app: str) -> httpx.Response:
        if self.plan_error:
            return httpx.Response(400, json={"detail": self.plan_error})
        stages = [{"name": "fort", "hosts": ["host01"]}, {"name": "batch_1", "hosts": ["host02"]}]
        return httpx.Response(200, json={
            "version": request.url.params.get("version"),
            "plan": {"stages": stages, "min_in_service": 1, "fleet_size": 2},
            "schedule": {"open": self.window_open, "frozen_by": None, "outside_window": "wait",
                         "reason": "outside deploy windows (UTC); next opens 2030-01-01 09:00 UTC"},
        })

    def trigger(self, request: httpx.Request, dag_id: str) -> httpx.Response:
        if self.trigger_error:
            return httpx.Response(self.trigger_error[0], json={"detail": self.trigger_error[1]})
        return httpx.Response(200, json={"dag_run_id": "manual__1", "dag_id": dag_id,
                                         "state": "queued"})

    def _step(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]

    def get_run(self, request: httpx.Request, dag_id: str, run_id: str) -> httpx.Response:
        self._current = self._step()
        return httpx.Response(200, json={"dag_run_id": run_id, **self._current[0]})

    def get_runs(self, request: httpx.Request, dag_id: str) -> httpx.Response:
        runs = list(self.active)
        runs += [{"dag_run_id": "manual__1", **self.steps[-1][0]}] if self.steps else []
        return httpx.Response(200, json={"dag_runs": runs, "total_entries": len(runs)})

    def get_tis(self, request: httpx.Request, dag_id: str, run_id: str) -> httpx.Response:
        current = getattr(self, "_current", None) or self.steps[-1]
        return httpx.Response(200, json={"task_instances": current[1]})

    def get_hitl(self, request: httpx.Request, dag_id: str, run_id: str) -> httpx.Response:
        found = [a for a in self.approvals if a["task_instance"]["dag_id"] == dag_id
                 and run_id in ("~", a["task_instance"]["dag_run_id"])]
        return httpx.Response(200, json={"hitl_details": found, "total_entries": len(found)})

    def get_one_hitl(self, request: httpx.Request, dag_id: str, run_id: str, task_id: str,
                     map_index: str) -> httpx.Response:
        """One approval; ``parking`` holds the states its task shows before the stored one."""
        for a in self.approvals:
            ti = a["task_instance"]
            if (ti["dag_id"], ti["dag_run_id"], ti["task_id"]) == (dag_id, run_id, task_id):
                shown = {**ti, "state": self.parking.pop(0)} if self.parking else ti
                return httpx.Response(200, json={**a, "task_instance": shown})
        return httpx.Response(404, json={"detail": "not found"})

    def answer(self, request: httpx.Request, dag_id: str, run_id: str, task_id: str,
               map_index: str) -> httpx.Response:
        chosen = json.loads(request.content)["chosen_options"]
        return httpx.Response(200, json={"chosen_options": chosen})

    def pull_brake(self, request: httpx.Request, app: str) -> httpx.Response:
        body = json.loads(request.content)
        self.brake = {"by": "admin", "reason": body["reason"], "action": body["action"]}
        return httpx.Response(200, json={"app": app, "brake": self.brake})

    def get_brake(self, request: httpx.Request, app: str) -> httpx.Response:
        return httpx.Response(200, json={"app": app, "brake": self.brake})

    def drop_brake(self, request: httpx.Request, app: str) -> httpx.Response:
        was, self.brake = self.brake, None
        return httpx.Response(200, json={"app": app, "brake": None, "was": was})


D = r"/api/v2/dags/([^/]+)"
ROUTES = {
    ("GET", r"/api/v2/dags"): FakeAirflow.get_dags,
    ("GET", D): FakeAirflow.get_dag,
    ("GET", D + "/details"): FakeAirflow.get_dag,
    ("PATCH", D): FakeAirflow.patch_dag,
    ("GET", r"/tars/apps/([^/]+)/plan"): FakeAirflow.plan,
    ("POST", D + "/dagRuns"): FakeAirflow.trigger,
    ("GET", D + "/dagRuns"): FakeAirflow.get_runs,
    ("GET", D + r"/dagRuns/([^/]+)"): FakeAirflow.get_run,
    ("GET", D + r"/dagRuns/([^/]+)/taskInstances"): FakeAirflow.get_tis,
    ("GET", D + r"/dagRuns/([^/]+)/hitlDetails"): FakeAirflow.get_hitl,
    ("GET", D + r"/dagRuns/([^/]+)/taskInstances/([^/]+)/(-?\d+)/hitlDetails"):
        FakeAirflow.get_one_hitl,
    ("PATCH", D + r"/dagRuns/([^/]+)/taskInstances/([^/]+)/(-?\d+)/hitlDetails"):
        FakeAirflow.answer,
    ("POST", r"/tars/apps/([^/]+)/brake"): FakeAirflow.pull_brake,
    ("GET", r"/tars/apps/([^/]+)/brake"): FakeAirflow.get_brake,
    ("DELETE", r"/tars/apps/([^/]+)/brake"): FakeAirflow.drop_brake,
}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeAirflow:
    """The fake API, wired in through the environment like a CI job would."""
    server = FakeAirflow()
    transport = httpx.MockTransport(server.handler)
    monkeypatch.setenv("TARS_AIRFLOW_URL", URL)
    monkeypatch.setenv("TARS_AIRFLOW_USER", "ci")
    monkeypatch.setenv("TARS_AIRFLOW_PASSWORD", "secret")
    monkeypatch.delenv("TARS_AIRFLOW_TOKEN", raising=False)
    real = Airflow.from_env.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(commands.Airflow, "from_env", classmethod(
        lambda cls, environ=None, transport_=None: real(cls, environ, transport)))
    return server
