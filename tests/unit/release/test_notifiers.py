"""Airflow notifiers per app: real mail to a loopback SMTP receiver, real Slack webhook POSTs,
user text never rendered, a failing or hanging notifier never holding or failing the release."""

from __future__ import annotations

import json
import logging
import socket
import time
import typing
from types import SimpleNamespace
from typing import Any

import pytest

from tars_operators.config.schema import Notifier, Notify, Webhook
from tars_operators.release import events, notifiers
from tars_operators.release.events import Notice, notify
from tars_operators.release.notifiers import KINDS, message
from tests.smtp import body, free_port, smtp_receiver
from tests.webhooks import receiver

pytestmark = pytest.mark.unit

INJECT = "{{ 7*7 }} {% for x in range(3) %}x{% endfor %} {{ app }}"
TOKEN = "T0SECRET/B0SECRET/keykeykeykey"


def app(*targets: Any) -> SimpleNamespace:
    cfg = Notify.model_validate({
        "webhooks": [t for t in targets if "url" in t],
        "notifiers": [t for t in targets if "kind" in t]})
    return SimpleNamespace(name="demo", config=SimpleNamespace(notify=cfg))


def smtp(**more: Any) -> dict[str, Any]:
    return {"kind": "smtp", "to": "ops@example.test", "conn_id": "tars_smtp",
            "events": ["start", "failure"], **more}


def slack(**more: Any) -> dict[str, Any]:
    return {"kind": "slack_webhook", "conn_id": "tars_slack", "events": ["start"], **more}


def test_every_kind_the_schema_accepts_has_a_builder_and_nothing_else() -> None:
    union = typing.get_args(typing.get_args(Notifier)[0])
    kinds = {k for member in union for k in typing.get_args(member.model_fields["kind"].annotation)}
    assert set(KINDS) == kinds == {"smtp", "slack_webhook"}


def test_the_default_message_is_one_subject_line_and_a_plain_body() -> None:
    notice = Notice("demo", "start", "planned: 2 hosts → 2.0.0\nBcc: evil@example.test",
                    ["by alice: fix", "ticket OPS-1"], "r1", "2.0.0", at="2026-11-29T00:00:00+00:00")
    msg = message(notice)
    assert msg.subject == "[tars] demo start: planned: 2 hosts → 2.0.0 Bcc: evil@example.test"
    assert msg.body.splitlines() == [
        "planned: 2 hosts → 2.0.0", "Bcc: evil@example.test", "by alice: fix", "ticket OPS-1", "",
        "app: demo", "event: start", "version: 2.0.0", "run: r1", "at: 2026-11-29T00:00:00+00:00"]
    long = message(Notice("demo", "failure", "x" * 500))
    assert len(long.subject) == notifiers.SUBJECT_MAX and long.subject.endswith("…")


def test_placeholders_insert_values_once_and_never_render_them() -> None:
    notice = Notice("demo", "start", f"planned: {INJECT}", [f"by alice: {INJECT}"], None, "2.0.0")
    msg = message(notice, "{{app}} {{ event }} {{ version }}{{ run_id }}: {{ summary }}",
                  "{{ details }}\n{{ at }}")
    assert msg.subject == f"demo start 2.0.0: planned: {INJECT}"  # {{ app }} in a value stays
    assert msg.body == f"by alice: {INJECT}\n{notice.at}"


def test_a_mail_carries_user_text_verbatim_and_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    with smtp_receiver() as box:
        monkeypatch.setenv("AIRFLOW_CONN_TARS_SMTP", box.connection())
        sent = notify(app(smtp(to=["ops@example.test", "dev@example.test"],
                               **{"from": "releases@example.test"})),
                      "start", f"planned → <b>{INJECT}</b>", [f"by alice: {INJECT}"], run_id="r1",
                      version="2.0.0")
        assert [(d.target, d.ok) for d in sent] == [("smtp:tars_smtp", True)]
        (mail,) = box.mails
    assert mail["From"] == "releases@example.test"
    assert mail["To"] == "ops@example.test, dev@example.test"
    assert mail["Subject"] == f"[tars] demo start: planned → <b>{INJECT}</b>"
    raw = next(p for p in mail.walk() if p.get_content_type() == "text/html")
    assert "<b>" not in raw.get_payload(decode=True).decode()  # escaped: no markup injected
    text = body(mail)
    assert f"planned → <b>{INJECT}</b>\nby alice: {INJECT}\n" in text
    assert text.count(INJECT) == 2 and "xxx" not in text  # nothing rendered


def test_the_connection_gives_the_sender_when_the_config_does_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with smtp_receiver() as box:
        monkeypatch.setenv("AIRFLOW_CONN_TARS_SMTP", box.connection())
        notify(app(smtp(subject="{{ app }} {{ event }}", body="{{ summary }}")), "failure",
               INJECT, [])
    (mail,) = box.mails
    assert (mail["From"], mail["Subject"], body(mail)) == ("tars@example.test", "demo failure",
                                                           INJECT)


def test_a_slack_message_is_escaped_and_never_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    with receiver() as rec:
        monkeypatch.setenv("AIRFLOW_CONN_TARS_SLACK", json.dumps(
            {"conn_type": "slackwebhook", "host": rec.url, "password": TOKEN}))
        notify(app(slack()), "start", f"<!channel> {INJECT}", ["by alice"], run_id="r1",
               version="2.0.0")
        notify(app(slack(text="{{ app }}: {{ summary }}")), "start", f"<@U1> {INJECT}", [])
    assert rec.paths == ["/" + TOKEN] * 2  # the connection's webhook
    first, second = (b["text"] for b in rec.bodies)
    assert first.splitlines()[:2] == [f"[tars] demo start: &lt;!channel&gt; {INJECT}", "by alice"]
    assert "version: 2.0.0 · run: r1 · at: " in first
    assert second == f"demo: &lt;@U1&gt; {INJECT}"


def test_a_failing_notifier_does_not_stop_the_others_and_never_raises(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    dead = free_port()
    monkeypatch.setenv("AIRFLOW_CONN_TARS_SMTP", json.dumps(
        {"conn_type": "smtp", "host": "127.0.0.1", "port": dead, "login": "tars",
         "password": "smtp-pass-word", "extra": {"disable_ssl": True, "disable_tls": True,
                                                 "timeout": 2, "retry_limit": 0}}))
    monkeypatch.setenv("AIRFLOW_CONN_TARS_SLACK", json.dumps(
        {"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{dead}", "password": TOKEN}))
    with receiver() as rec, caplog.at_level(logging.INFO):
        sent = notify(app(smtp(), slack(), {"url": rec.url, "events": ["start"]}), "start",
                      "planned", [], run_id="r7")
    assert [(d.target, d.ok) for d in sent] == [
        (rec.url, True), ("smtp:tars_smtp", False), ("slack_webhook:tars_slack", False)]
    assert "ConnectionRefusedError" in sent[1].error and "URLError" in sent[2].error
    assert rec.events("r7") == ["start"]
    assert "notifier smtp:tars_smtp (start) failed: ConnectionRefusedError" in caplog.text
    for secret in ("smtp-pass-word", TOKEN, "B0SECRET"):
        assert secret not in caplog.text + " ".join(d.error for d in sent)


def test_a_hanging_mail_server_is_left_behind_within_the_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "BUDGET", 1.0)
    with socket.socket() as silent, receiver() as rec:  # accepts, never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setenv("AIRFLOW_CONN_TARS_SMTP", json.dumps(
            {"conn_type": "smtp", "host": "127.0.0.1", "port": silent.getsockname()[1],
             "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 30}}))
        started = time.monotonic()
        sent = notify(app({"url": rec.url, "events": ["failure"]}, smtp()), "failure", "x", [])
        took = time.monotonic() - started
    assert took < 5, took
    assert [(d.ok, d.error) for d in sent] == [(True, ""), (False, "not sent within 1s")]


def test_notifiers_get_only_the_events_they_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    with smtp_receiver() as box:
        monkeypatch.setenv("AIRFLOW_CONN_TARS_SMTP", box.connection())
        spec = app(smtp(events=["approval"]))  # the old name still means approval_needed
        assert notify(spec, "start", "not wanted", []) == []
        notify(spec, "approval_needed", "demo: continue the release after fort?", [])
    assert box.subjects() == ["[tars] demo approval_needed: demo: continue the release after fort?"]


def test_unknown_kinds_and_jinja_in_templates_are_refused() -> None:
    with pytest.raises(ValueError, match="does not match any of the expected tags"):
        Notify.model_validate({"notifiers": [{"kind": "airflow.providers.x.Notifier"}]})
    with pytest.raises(ValueError, match=r"not jinja\), got '\{\{ ti.task_id \}\}'"):
        Notify.model_validate({"notifiers": [smtp(subject="{{ ti.task_id }}")]})
    with pytest.raises(ValueError, match="to"):
        Notify.model_validate({"notifiers": [{"kind": "smtp"}]})
    assert Webhook(url="http://x").events == ("start", "success", "failure")
