"""Release events: webhooks, Airflow notifiers, and the Asset every finished release updates.

One event vocabulary (``EVENTS``, the schema's ``Event`` Literal) and one sender: each event
goes to the app's webhooks and notifiers (``release/notifiers.py``) that want it, all at once,
for at most ``BUDGET`` seconds in all, and never fails the release. A webhook is retried with
backoff; its URL is a credential (path and query), so only ``redact_url``'s form ever reaches
a log, as only a notifier's kind and connection id do.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, get_args

from tars_operators.config.schema import Event, Notifier, Webhook
from tars_operators.redaction import mask_url, redact_url, scrub
from tars_operators.release import notifiers

if TYPE_CHECKING:
    from airflow.sdk import Context

    from tars_operators.config.spec import AppSpec

log_ = logging.getLogger(__name__)

EVENTS: tuple[str, ...] = get_args(Event)
BUDGET = 30.0  # seconds an event's deliveries may take in all, retries included
ATTEMPT_TIMEOUT = 5.0
BACKOFF = 1.0  # first pause between attempts; doubles after each
OUTCOMES = ("success", "failure", "rolled_back")


def asset_uri(app: str) -> str:
    """The Asset a finished release of ``app`` updates (``tars`` is a free URI scheme)."""
    return f"tars://{app}"


def release_asset(app: str) -> Any:
    from airflow.sdk import Asset

    return Asset(asset_uri(app))  # equal to what a downstream DAG writes: Asset("tars://<app>")


@dataclass(frozen=True)
class Notice:
    """The JSON body every webhook receives."""

    app: str
    event: str
    summary: str
    details: list[str] = field(default_factory=list)
    run_id: str | None = None
    version: str | None = None
    at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def body(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Delivery:
    """What happened to one webhook or notifier: delivered or not, attempts, and why."""

    target: str  # a redacted URL, or a notifier's kind:conn_id
    ok: bool
    attempts: int
    error: str = ""


def notify(spec: AppSpec, event: str, summary: str, details: list[str] | None = None, *,
           run_id: str | None = None, version: str | None = None,
           background: bool = False) -> list[Delivery]:
    """Send ``event`` to the app's webhooks and notifiers that want it; never raises.

    Returns one ``Delivery`` per target, webhooks first, in config order.
    ``background``: send from a daemon thread (the API answers at once); returns nothing then.
    """
    if event not in EVENTS:  # a programming error, but never worth failing a release for
        log_.error("unknown event %r not sent (known: %s)", event, ", ".join(EVENTS))
        return []
    config = spec.config.notify
    targets: list[Webhook | Notifier] = [t for t in (*config.webhooks, *config.notifiers)
                                         if event in t.events]
    if not targets:
        return []
    notice = Notice(spec.name, event, summary, list(details or []), run_id, version)
    if background:
        threading.Thread(target=_send_all, args=(targets, notice), daemon=True,
                         name=f"tars-notify-{event}").start()
        return []
    return _send_all(targets, notice)


def _send_all(targets: list[Webhook | Notifier], notice: Notice) -> list[Delivery]:
    """All targets at once, each in a daemon thread, waited for ``BUDGET`` seconds in all:
    a dead one delays the task by one budget, not one per target, and a provider that ignores
    its own timeouts is left behind rather than holding the release."""
    results: list[Delivery | None] = [None] * len(targets)
    shown = [redact_url(t.url, keep_path=False) if isinstance(t, Webhook) else
             notifiers.describe(t) for t in targets]

    def run(index: int, target: Webhook | Notifier) -> None:
        try:
            results[index] = send(target.url, notice) if isinstance(target, Webhook) else \
                send_notifier(target, notice)
        except Exception as exc:  # noqa: BLE001 - a notification never fails the release
            log_.warning("notification %s (%s) not sent: %s", shown[index], notice.event,
                         type(exc).__name__)
            results[index] = Delivery(shown[index], False, 1, type(exc).__name__)

    threads = [threading.Thread(target=run, args=(i, t), daemon=True,
                                name=f"tars-notify-{notice.event}-{i}")
               for i, t in enumerate(targets)]
    deadline = time.monotonic() + BUDGET + 1.0  # webhooks stop themselves at BUDGET
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    out = []
    for index, result in enumerate(results):
        if result is None:
            log_.warning("notification %s (%s) not sent within %.0fs", shown[index],
                         notice.event, BUDGET)
            result = Delivery(shown[index], False, 1, f"not sent within {BUDGET:.0f}s")
        out.append(result)
    return out


def send_notifier(cfg: Notifier, notice: Notice) -> Delivery:
    """Send ``notice`` through one Airflow notifier (one attempt: providers retry themselves)."""
    shown = notifiers.describe(cfg)
    try:
        notifiers.deliver(cfg, notice)
    except Exception as exc:  # noqa: BLE001 - a notification never fails the release
        error = notifiers.scrub_error(exc, cfg.conn_id)
        log_.warning("notifier %s (%s) failed: %s", shown, notice.event, error)
        return Delivery(shown, False, 1, error)
    return Delivery(shown, True, 1)


def send(url: str, notice: Notice, *, budget: float | None = None, backoff: float | None = None,
         sleep: Callable[[float], None] = time.sleep) -> Delivery:
    """POST ``notice`` to ``url``; retry connection errors, 429 and 5xx within ``budget`` s."""
    import httpx

    from tars_operators.hooks.http import client as http_client

    budget = BUDGET if budget is None else budget
    backoff = BACKOFF if backoff is None else backoff

    mask_url(url, whole_path=True)  # its path and query are the credential
    shown = redact_url(url, keep_path=False)
    deadline = time.monotonic() + budget
    pause, attempt, error = backoff, 0, ""
    while True:
        attempt += 1
        timeout = max(0.1, min(ATTEMPT_TIMEOUT, deadline - time.monotonic()))
        try:
            with http_client() as http:
                r = http.post(url, json=notice.body(), timeout=timeout)
            if r.status_code < 300:
                return Delivery(shown, True, attempt)
            error = f"HTTP {r.status_code}"
            retry = r.status_code == 429 or r.status_code >= 500
        except httpx.HTTPError as exc:  # its text may hold the URL: scrubbed
            error = f"{type(exc).__name__}: {scrub(str(exc), url, keep_path=False)}"
            retry = True
        if not retry or time.monotonic() + pause >= deadline:
            log_.warning("webhook %s (%s) failed after %d attempt(s): %s", shown, notice.event,
                         attempt, error)
            return Delivery(shown, False, attempt, error)
        log_.info("webhook %s (%s): %s; retrying in %.1fs", shown, notice.event, error, pause)
        sleep(pause)
        pause *= 2


def brake_changed(load_spec: Callable[[], Any], pulled: bool, who: str, reason: str,
                  action: str = "") -> None:
    """The ``brake`` event, from where the brake changes (the API), sent in the background.

    ``load_spec`` runs in the background too: an app whose config is gone or broken keeps
    its brake working, only without notifications.
    """
    if pulled:
        summary = f"brake ON ({action or 'hold'}) by {who}: {reason}"
    else:
        summary = f"brake released by {who}" + (f": {reason}" if reason else "")

    def run() -> None:
        try:
            spec = load_spec()
        except Exception as exc:  # noqa: BLE001 - the brake itself is already set
            log_.warning("brake event not sent: the app's config did not load: %s", exc)
            return
        notify(spec, "brake", summary, [])

    threading.Thread(target=run, daemon=True, name="tars-notify-brake").start()


def outcome_of(states: dict[str, str | None], *, finalize: str, halt: str, abort: str,
               report: str) -> str | None:
    """How a run ended, from its end tasks' states; None when none of them ran (dry run)."""
    if states.get(report) in ("success", "failed"):
        return "rolled_back"
    if states.get(finalize) == "success":
        return "success"
    if any(states.get(t) in ("failed", "upstream_failed") for t in (finalize, halt, abort)):
        return "failure"
    return None


@dataclass(frozen=True)
class ApprovalNeeded:
    """``on_execute_callback`` of an approval task: the ``approval_needed`` event, sent once.

    The callback also runs when the task resumes with the answer, so the first call records
    itself in the task state store (kept across deferrals).
    """

    config_path: str
    defaults_path: str | None
    question: str

    def __call__(self, context: Context) -> None:
        from tars_operators.release.runtime import load_spec, run_plan

        store = context.get("task_state_store")
        if store is not None and store.get("approval_needed_sent"):
            return
        dr = context["dag_run"]
        ti = context["ti"]
        answer = (f"answer in Airflow (Required actions) or: tars approve "
                  f"{dr.dag_id.split('__', 1)[-1]} {dr.run_id}")
        notify(load_spec(self.config_path, self.defaults_path), "approval_needed",
               self.question, [answer, f"task {ti.task_id}"], run_id=dr.run_id,
               version=run_plan(context).version)
        if store is not None:
            store.set("approval_needed_sent", True)
