"""A small Airflow REST client: token, trigger, follow a run, answer approvals, brake.

Needs only httpx; reads ``TARS_AIRFLOW_URL``, ``TARS_AIRFLOW_USER`` / ``TARS_AIRFLOW_PASSWORD``
or ``TARS_AIRFLOW_TOKEN`` from the environment when not given.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, cast
from urllib.parse import quote

import httpx

from tars_operators.client.settle import answer_delay
from tars_operators.hooks.http import client as http_client

TERMINAL = {"success", "failed"}
TERMINAL_TASK_STATES = {"success", "failed", "skipped", "upstream_failed", "removed"}


class ApiError(Exception):
    """The API refused (status and its message) or could not be reached."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:500]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # pydantic-style validation errors
        return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return str(detail)


@dataclass
class Airflow:
    url: str
    token: str = ""
    user: str = ""
    password: str = ""
    timeout: float = 30.0
    # Tests pass an ``httpx.MockTransport``; None: real network.
    transport: httpx.BaseTransport | None = field(default=None, repr=False, compare=False)
    _http: httpx.Client | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> Airflow:
        env = os.environ if environ is None else environ
        url = env.get("TARS_AIRFLOW_URL", "")
        if not url:
            raise ApiError("TARS_AIRFLOW_URL is not set (e.g. http://127.0.0.1:8080)")
        if not url.startswith(("http://", "https://")):
            raise ApiError(f"TARS_AIRFLOW_URL must start with http:// or https://, got {url!r}")
        return cls(url=url.rstrip("/"), token=env.get("TARS_AIRFLOW_TOKEN", ""),
                   user=env.get("TARS_AIRFLOW_USER", ""),
                   password=env.get("TARS_AIRFLOW_PASSWORD", ""), transport=transport)

    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = http_client(transport=self.transport, timeout=self.timeout)
        return self._http

    def _auth(self) -> dict[str, str]:
        if not self.token:
            if not self.user:
                raise ApiError("no credentials: set TARS_AIRFLOW_TOKEN, or TARS_AIRFLOW_USER and "
                               "TARS_AIRFLOW_PASSWORD", 401)
            try:
                r = self._client().post(f"{self.url}/auth/token",
                                        json={"username": self.user, "password": self.password})
            except httpx.HTTPError as exc:
                raise ApiError(f"cannot reach Airflow at {self.url}: {exc}") from None
            if r.status_code >= 400:
                raise ApiError(f"login as {self.user!r} refused ({r.status_code}): {_detail(r)}",
                               r.status_code)
            self.token = r.json()["access_token"]
        return {"Authorization": f"Bearer {self.token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = self._client().request(method, f"{self.url}{path}", headers=self._auth(),
                                       **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach Airflow at {self.url}: {exc}") from None
        if r.status_code >= 400:
            raise ApiError(f"{method} {path}: {r.status_code}: {_detail(r)}", r.status_code)
        return r.json() if r.content else None

    def obj(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """``request`` for routes that answer a JSON object."""
        return cast("dict[str, Any]", self.request(method, path, **kwargs))

    def items(self, path: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
        """The ``key`` list of a GET route's JSON object (``dags``, ``dag_runs``, …)."""
        return cast("list[dict[str, Any]]", self.obj("GET", path, **kwargs)[key])

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self.obj("GET", f"/api/v2/dags/{quote(dag_id, safe='')}")

    def dag_details(self, dag_id: str) -> dict[str, Any]:
        """The DAG with its ``params`` (the trigger form: one entry per key the run accepts)."""
        return self.obj("GET", f"/api/v2/dags/{quote(dag_id, safe='')}/details")

    def dag_ids(self, prefix: str) -> list[str]:
        """Ids of the DAGs whose id starts with ``prefix`` (``_`` is literal here)."""
        dags = self.request("GET", "/api/v2/dags",
                            params={"dag_id_pattern": prefix, "limit": 1000})["dags"]
        return sorted(d["dag_id"] for d in dags if d["dag_id"].startswith(prefix))

    def trigger(self, dag_id: str, conf: dict[str, Any], note: str | None = None,
                run_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if note:
            body["note"] = note
        if run_id:
            body["dag_run_id"] = run_id
        return self.obj("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.obj("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def runs(self, dag_id: str, limit: int = 5) -> list[dict[str, Any]]:
        return self.items(f"/api/v2/dags/{dag_id}/dagRuns", "dag_runs",
                          params={"limit": limit, "order_by": "-run_after"})

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.items(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                          "task_instances", params={"limit": 1000})

    def pending_approvals(self, dag_id: str, run_id: str = "~") -> list[dict[str, Any]]:
        """Human-in-the-loop tasks of ``dag_id`` (``~``: any run) still waiting for an answer."""
        return self.items(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/hitlDetails", "hitl_details",
                          params={"response_received": "false", "limit": 100})

    def answer_delay(self, dag_id: str, run_id: str, task_id: str,
                     map_index: int = -1) -> float | None:
        """Seconds before an answer to this approval is safe (``client.settle``); None while its
        question is not written or its task not parked yet."""
        try:
            detail = self.obj("GET", self._hitl_path(dag_id, run_id, task_id, map_index))
        except ApiError as exc:
            if exc.status != 404:
                raise
            return None  # the question is not written yet
        asked = detail.get("created_at")
        return answer_delay((detail.get("task_instance") or {}).get("state"),
                            datetime.fromisoformat(asked) if asked else None,
                            datetime.now(timezone.utc))

    def answer(self, dag_id: str, run_id: str, task_id: str, option: str,
               map_index: int = -1, *, settle_timeout: float = 60.0) -> dict[str, Any]:
        """Answer a human-in-the-loop task (409 when it was already answered), once its task has
        been parked long enough for Airflow to keep the answer (``client.settle``)."""
        deadline = time.monotonic() + settle_timeout
        while time.monotonic() < deadline:
            delay = self.answer_delay(dag_id, run_id, task_id, map_index)
            if delay == 0:
                break
            time.sleep(min(delay or 0.5, max(0.0, deadline - time.monotonic())))
        return self.obj("PATCH", self._hitl_path(dag_id, run_id, task_id, map_index),
                        json={"chosen_options": [option]})

    @staticmethod
    def _hitl_path(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
        return f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails"

    def wait(self, dag_id: str, run_id: str, *, timeout: float = 3600, poll: float = 1.0,
             on_change: Callable[[dict[str, Any], list[dict[str, Any]]], None] | None = None
             ) -> dict[str, Any]:
        """Poll until the run ends; ``on_change(run, tis)`` whenever something moved. Without
        ``on_change`` only the run is read (its task instances cost the server far more)."""
        deadline = time.monotonic() + timeout
        seen = None
        while True:
            run = self.run(dag_id, run_id)
            if on_change is not None:
                tis = self.task_instances(dag_id, run_id)
                key = (run["state"], run.get("note"),
                       tuple(sorted((t["task_id"], t["map_index"], t["state"]) for t in tis)))
                if key != seen:
                    seen = key
                    on_change(run, tis)
            if run["state"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                tis = self.task_instances(dag_id, run_id)
                raise ApiError(f"run {run_id} still {run['state']} after {timeout:.0f}s; "
                               f"its tasks: {_tally(tis)}; its note: {run.get('note')!r}")
            time.sleep(poll)


def _tally(tis: list[dict[str, Any]]) -> str:
    """Task states counted, the unfinished ones named (what a stuck run was doing)."""
    counts: dict[str, int] = {}
    for t in tis:
        counts[str(t["state"])] = counts.get(str(t["state"]), 0) + 1
    busy = sorted({t["task_id"] for t in tis if t["state"] not in TERMINAL_TASK_STATES})
    return (", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            + (f" (not finished: {', '.join(busy[:8])})" if busy else ""))
