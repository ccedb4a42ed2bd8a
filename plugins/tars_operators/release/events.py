"""Release events: webhook notifications and the Asset every finished release updates.

One event vocabulary (``EVENTS``, the schema's ``Event`` Literal) and one sender. A webhook is
retried with backoff for at most ``BUDGET`` seconds and never fails the release; its URL is a
credential (path and query), so only ``redact_url``'s form ever reaches a log.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, get_args

from tars_operators.config.schema import Event, Webhook
from tars_operators.redaction import mask_url, redact_url, scrub

log_ = logging.getLogger(__name__)

EVENTS: tuple[str, ...] = get_args(Event)
BUDGET = 30.0  # seconds a webhook may take in all, retries included
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
    """What happened to one webhook: delivered or not, after how many attempts, and why."""

    url: str  # redacted
    ok: bool
    attempts: int
    error: str = ""


def notify(spec: Any, event: str, summary: str, details: list[str] | None = None, *,
           run_id: str | None = None, version: str | None = None,
           background: bool = False) -> list[Delivery]:
    """POST ``event`` to the app's webhooks that want it; never raises.

    ``background``: send from a daemon thread (the API answers at once); returns nothing then.
    """
    if event not in EVENTS:  # a programming error, but never worth failing a release for
        log_.error("unknown event %r not sent (known: %s)", event, ", ".join(EVENTS))
        return []
    hooks = [w for w in spec.config.notify.webhooks if event in w.events]
    if not hooks:
        return []
    notice = Notice(spec.name, event, summary, list(details or []), run_id, version)
    if background:
        threading.Thread(target=_send_all, args=(hooks, notice), daemon=True,
                         name=f"tars-notify-{event}").start()
        return []
    return _send_all(hooks, notice)


def _send_all(hooks: list[Webhook], notice: Notice) -> list[Delivery]:
    """All hooks at once: a dead one delays the task by one budget, not one per hook."""
    from concurrent.futures import ThreadPoolExecutor

    try:
        with ThreadPoolExecutor(max_workers=min(8, len(hooks))) as pool:
            return list(pool.map(lambda hook: send(hook.url, notice), hooks))
    except Exception as exc:  # noqa: BLE001 - a notification never fails the release
        log_.warning("notification %s not sent: %s", notice.event, type(exc).__name__)
        return []


def send(url: str, notice: Notice, *, budget: float | None = None, backoff: float | None = None,
         sleep: Callable[[float], None] = time.sleep) -> Delivery:
    """POST ``notice`` to ``url``; retry connection errors, 429 and 5xx within ``budget`` s."""
    import httpx

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
            r = httpx.post(url, json=notice.body(), timeout=timeout)
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

    def __call__(self, context: Any) -> None:
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
