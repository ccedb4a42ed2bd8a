"""Airflow notifiers per app (``notify.notifiers``): a closed registry of kinds by name.

A release event's text is user text (reason, ticket, host names), so nothing here goes through
jinja: the message is built as plain text, a config's subject/body placeholders are substituted
in one pass (an inserted value is never scanned again), and the provider's ``notify()`` is called
directly — ``BaseNotifier.__call__`` would render its template fields against a context.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from tars_operators.config.schema import (
    MESSAGE_FIELDS, PLACEHOLDER, Notifier, SlackWebhookNotifier, SmtpNotifier,
)
from tars_operators.redaction import HIDDEN, secret_parts

if TYPE_CHECKING:
    from tars_operators.release.events import Notice

log_ = logging.getLogger(__name__)

SUBJECT_MAX = 200  # characters; a longer subject is cut (mail clients cut it anyway)
SLACK_TIMEOUT = 10  # seconds per attempt; the sender bounds the whole delivery
_QUIET = logging.getLogger("tars_operators.release.slack_sdk")
_QUIET.setLevel(logging.WARNING)


@dataclass(frozen=True)
class Message:
    """One event as plain text: a one-line subject and a body."""

    subject: str
    body: str


def fields_of(notice: Notice) -> dict[str, str]:
    """The values a subject/body placeholder may insert (``MESSAGE_FIELDS``), as text."""
    values = {"app": notice.app, "event": notice.event, "summary": notice.summary,
              "details": "\n".join(notice.details), "run_id": notice.run_id or "",
              "version": notice.version or "", "at": notice.at}
    return {name: values[name] for name in MESSAGE_FIELDS}


def substitute(template: str, values: dict[str, str]) -> str:
    """``template`` with each ``{{ name }}`` replaced by its value, once: no jinja, no recursion."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def message(notice: Notice, subject: str | None = None, body: str | None = None) -> Message:
    """The event's subject and body: the config's templates, or Tars's own."""
    values = fields_of(notice)
    head = substitute(subject, values) if subject else \
        f"[tars] {notice.app} {notice.event}: {notice.summary}"
    head = " ".join(head.split())  # one line: a newline in a header would end it
    if len(head) > SUBJECT_MAX:
        head = head[:SUBJECT_MAX - 1] + "…"
    text = substitute(body, values) if body else \
        "\n".join([notice.summary, *notice.details, "", *_facts(notice)])
    return Message(head or f"[tars] {notice.app} {notice.event}", text)


def _facts(notice: Notice) -> list[str]:
    lines = [f"app: {notice.app}", f"event: {notice.event}"]
    lines += [f"version: {notice.version}"] if notice.version else []
    lines += [f"run: {notice.run_id}"] if notice.run_id else []
    return [*lines, f"at: {notice.at}"]


def _smtp(cfg: SmtpNotifier, notice: Notice) -> Any:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier as AirflowSmtpNotifier

    msg = message(notice, cfg.subject, cfg.body)
    # The provider sends HTML only: the text is escaped, never markup a reason could inject.
    content = f"<pre>{html.escape(msg.body)}</pre>"
    return AirflowSmtpNotifier(to=list(cfg.to), from_email=cfg.from_, subject=msg.subject,
                               html_content=content, smtp_conn_id=cfg.conn_id)


def slack_escape(text: str) -> str:
    """Slack's own escaping: ``<!channel>``, ``<@U…>`` or links in user text stay plain text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_webhook(cfg: SlackWebhookNotifier, notice: Notice) -> Any:
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier as Airflow

    if cfg.text:
        text = substitute(cfg.text, {k: slack_escape(v) for k, v in fields_of(notice).items()})
    else:
        lines = [message(notice).subject, *notice.details, " · ".join(_facts(notice)[2:])]
        text = slack_escape("\n".join(lines))
    notifier = Airflow(slack_webhook_conn_id=cfg.conn_id, text=text, timeout=SLACK_TIMEOUT)
    # slack_sdk logs the webhook URL (a credential) at INFO when it retries, through the hook's
    # logger: give it one that logs warnings only (its errors name no URL).
    notifier.hook = SlackWebhookHook(slack_webhook_conn_id=cfg.conn_id, timeout=SLACK_TIMEOUT,
                                     logger=_QUIET)
    return notifier


# kind → builder of the provider's notifier; the schema's ``Notifier`` union has the same kinds.
KINDS: dict[str, Callable[[Any, Notice], Any]] = {
    "smtp": _smtp,
    "slack_webhook": _slack_webhook,
}


def describe(cfg: Notifier) -> str:
    """How a notifier is named in logs: kind and connection id (never the connection's secrets)."""
    return f"{cfg.kind}:{cfg.conn_id}"


def deliver(cfg: Notifier, notice: Notice) -> None:
    """Send ``notice`` through ``cfg``'s provider notifier; raises what the provider raises."""
    notifier = KINDS[cfg.kind](cfg, notice)
    notifier.notify({})  # not notifier(context): that would render the text as jinja


def scrub_error(exc: BaseException, conn_id: str) -> str:
    """``exc`` as one line without the connection's password or secret URL parts."""
    text = f"{type(exc).__name__}: {exc}"
    for secret in sorted(_connection_secrets(conn_id), key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return " ".join(text.split())[:500]


def _connection_secrets(conn_id: str) -> list[str]:
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
    except Exception:  # noqa: BLE001 - no connection, no secret of it to hide
        return []
    found = [conn.password] if conn.password and len(conn.password) >= 4 else []
    for value in (conn.host, conn.password):
        if value and "://" in value:
            found += [s for s in secret_parts(value) if len(s) >= 4]
    return found
