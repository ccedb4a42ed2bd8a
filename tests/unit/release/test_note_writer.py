"""Run notes reach the api-server over one client per process: one login for many notes."""

from __future__ import annotations

import json
from typing import Iterator

import httpx
import pytest

from tars_operators.client.api import Airflow
from tars_operators.release import notes, pools

pytestmark = pytest.mark.unit


class FakeApiServer:
    """/auth/token hands out numbered tokens; PATCH accepts only the current one."""

    def __init__(self) -> None:
        self.logins = 0
        self.valid = ""
        self.notes: list[str] = []
        self.lookups = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            self.logins += 1
            self.valid = f"token-{self.logins}"
            return httpx.Response(201, json={"access_token": self.valid})
        if request.headers.get("Authorization") != f"Bearer {self.valid}":
            return httpx.Response(401, json={"detail": "Invalid JWT token"})
        self.notes.append(json.loads(request.content)["note"])
        return httpx.Response(200, json={"note": self.notes[-1]})

    def api(self) -> Airflow:
        self.lookups += 1
        return Airflow("http://127.0.0.1:9", user="tars", password="pw",
                       transport=httpx.MockTransport(self.handle))


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApiServer]:
    fake = FakeApiServer()
    monkeypatch.setattr(pools, "task_api", fake.api)
    monkeypatch.setattr(notes, "current_brake_note", lambda dag_id, note: None)
    notes._api.clear()
    yield fake
    notes._api.clear()


def test_many_notes_take_one_connection_lookup_and_one_login(server: FakeApiServer) -> None:
    for i in range(5):
        assert notes.set_run_note("tars_deploy__demo", "run1", f"batch 1/2 · {i}/10 hosts")
    assert server.notes == [f"batch 1/2 · {i}/10 hosts" for i in range(5)]
    assert (server.lookups, server.logins) == (1, 1)


def test_an_expired_token_is_taken_anew_and_the_note_still_written(server: FakeApiServer) -> None:
    assert notes.set_run_note("tars_deploy__demo", "run1", "first")
    server.valid = "rotated"  # the api-server no longer accepts the token this process holds
    assert notes.set_run_note("tars_deploy__demo", "run1", "second")
    assert server.notes == ["first", "second"]
    assert (server.lookups, server.logins) == (2, 2)


def test_a_refused_note_is_reported_not_raised(server: FakeApiServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"detail": "Forbidden"})

    monkeypatch.setattr(server, "handle", refuse)
    assert notes.set_run_note("tars_deploy__demo", "run1", "x") is False
    assert server.lookups == 1  # a refusal other than 401 is not retried


def test_without_the_connection_the_note_is_only_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> Airflow:
        raise LookupError("connection 'tars_api': not defined")

    monkeypatch.setattr(pools, "task_api", missing)
    notes._api.clear()
    assert notes.set_run_note("tars_deploy__demo", "run1", "x") is False
