"""Release events: the webhook body, retries within the budget, secret URLs, every event sent."""

from __future__ import annotations

import ast
import logging
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tars_operators.config.schema import Notify, Webhook
from tars_operators.release import events
from tars_operators.release.events import EVENTS, Notice, notify, outcome_of, send
from tests.webhooks import receiver

pytestmark = pytest.mark.unit
PLUGINS = Path(__file__).resolve().parents[3] / "plugins" / "tars_operators"


def app(*hooks: Webhook) -> SimpleNamespace:
    return SimpleNamespace(name="demo", config=SimpleNamespace(notify=Notify(webhooks=hooks)))


def test_a_webhook_gets_the_json_body_of_its_events_only() -> None:
    with receiver() as rec:
        spec = app(Webhook(url=rec.url + "/hook", events=("start", "failure")))
        notify(spec, "start", "planned: 10 hosts → 2.0.0", ["by alice: fix"], run_id="r1",
               version="2.0.0")
        notify(spec, "success", "not wanted", [], run_id="r1", version="2.0.0")
    assert rec.events() == ["start"]
    body = rec.bodies[0]
    assert set(body) == {"app", "event", "run_id", "version", "summary", "details", "at"}
    assert (body["app"], body["run_id"], body["version"]) == ("demo", "r1", "2.0.0")
    assert body["summary"] == "planned: 10 hosts → 2.0.0" and body["details"] == ["by alice: fix"]
    assert body["at"].endswith("+00:00")  # ISO 8601, UTC


def test_server_errors_are_retried_with_backoff_until_delivered() -> None:
    pauses: list[float] = []
    with receiver(codes=[503, 500, 429]) as rec:
        d = send(rec.url, Notice("demo", "success", "ok"), backoff=0.01, sleep=pauses.append)
    assert d.ok and d.attempts == 4 and rec.events() == ["success"]
    assert pauses == [0.01, 0.02, 0.04]


def test_a_client_error_is_not_retried() -> None:
    with receiver(codes=[404]) as rec:
        d = send(rec.url, Notice("demo", "success", "ok"), backoff=0.01)
    assert not d.ok and d.attempts == 1 and d.error == "HTTP 404"


def test_an_unreachable_webhook_gives_up_within_its_budget_and_never_raises() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # (a 2 s budget: one attempt builds an httpx client, which can take 0.5 s on a busy machine)
    started = time.monotonic()
    d = send(f"http://127.0.0.1:{port}/x", Notice("demo", "failure", "x"), budget=2.0,
             backoff=0.05)
    assert not d.ok and d.attempts >= 2 and "ConnectError" in d.error
    assert time.monotonic() - started < 2.0 + 1.0


def test_a_failing_webhook_never_logs_its_secret_path_or_query(
        caplog: pytest.LogCaptureFixture) -> None:
    secret_path = "/services/T0SECRET/B0SECRET/keykeykeykey"
    with receiver(codes=[500] * 50) as rec, caplog.at_level(logging.INFO):
        url = f"{rec.url}{secret_path}?token=tok-very-secret"
        d = send(url, Notice("demo", "failure", "x"), budget=0.3, backoff=0.05)
    assert not d.ok
    text = caplog.text + d.target + d.error
    assert "webhook http://127.0.0.1" in caplog.text  # the host is named
    for secret in ("T0SECRET", "keykeykeykey", "tok-very-secret", "/services"):
        assert secret not in text


def test_old_event_names_still_load() -> None:
    hook = Webhook(url="http://x", events=["approval", "brake"])
    assert hook.events == ("approval_needed", "brake")
    with pytest.raises(ValueError, match="stage_passed"):
        Webhook(url="http://x", events=["stage passed"])


def _sent_events() -> set[str]:
    """Every event name passed to ``notify(spec, <event>, …)`` anywhere in Tars's code."""
    found: set[str] = set()
    for path in PLUGINS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and len(node.args) >= 2
                    and getattr(node.func, "id", getattr(node.func, "attr", "")) == "notify"):
                found |= {c.value for c in ast.walk(node.args[1])
                          if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return found


@pytest.mark.parametrize("event", EVENTS)
def test_every_event_the_schema_accepts_is_sent_somewhere(event: str) -> None:
    assert event in _sent_events(), f"no notify(..., {event!r}, ...) in plugins/tars_operators"


@pytest.mark.parametrize(("states", "outcome"), [
    ({"finalize": "success", "halt": "skipped", "abort": "skipped"}, "success"),
    ({"finalize": "failed", "halt": "skipped", "abort": "skipped"}, "failure"),
    ({"finalize": "skipped", "halt": "failed", "abort": "skipped"}, "failure"),
    ({"finalize": "skipped", "halt": "skipped", "abort": "failed"}, "failure"),
    ({"finalize": "skipped", "rollback.report": "failed"}, "rolled_back"),
    ({"finalize": "skipped", "halt": "skipped", "abort": "skipped",
      "rollback.report": "skipped"}, None),  # a dry run: no release event
])
def test_outcome_of_a_run_from_its_end_tasks(states: dict, outcome: str | None) -> None:
    assert outcome_of(states, finalize="finalize", halt="halt", abort="abort",
                      report="rollback.report") == outcome


def test_the_release_asset_uri_is_accepted_by_airflow() -> None:
    from airflow.sdk import Asset

    asset = events.release_asset("demo_app")
    assert asset.name == "tars://demo_app" and asset.uri == "tars://demo_app/"  # normalized
    assert asset == Asset("tars://demo_app")  # what a downstream DAG writes


def test_webhooks_are_sent_together_and_a_dead_one_does_not_stop_the_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "BACKOFF", 0.01)
    monkeypatch.setattr(events, "BUDGET", 0.5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/dead"
    with receiver() as rec:
        spec = app(Webhook(url=dead, events=("success",)),
                   Webhook(url=rec.url, events=("success",)))
        sent = notify(spec, "success", "ok", run_id="r9")
    assert [d.ok for d in sent] == [False, True] and rec.events("r9") == ["success"]
