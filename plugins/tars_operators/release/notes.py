"""The run note: where a release stands, in one line people read in the Airflow UI.

Tasks cannot write the run note through the Task SDK, so Tars sets it through Airflow's own
REST API (``PATCH /api/v2/dags/{dag}/dagRuns/{run}``) with the credentials of the Airflow
connection ``tars_api`` (http: host, port, login, password). Without that connection the
note is not written; the same line is always in the task log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tars_operators.release.machine import Brake

if TYPE_CHECKING:
    from tars_operators.client.api import Airflow

# The rollback's note headlines: written by operators/rollback.py, read back by web/fleet.py.
ROLLED_BACK = "rolled back: "  # + why. Failed hosts: … . n/n touched host(s) on a good release and UP
NOT_BACK = "; NOT: "  # + the hosts that are not on a good release and UP
ROLLING_BACK = "rolling back "  # + n host(s) from <version>: why

log = logging.getLogger(__name__)
API_CONN_ID = "tars_api"


def stage_label(stage: str, stages: list[str]) -> str:
    """``fort`` or ``batch 2/3`` (counting only the batch stages)."""
    batches = [s for s in stages if s != "fort"]
    if stage in batches:
        return f"batch {batches.index(stage) + 1}/{len(batches)}"
    return stage


BRAKE_OFF = "brake off"
_BRAKE_ON = "brake ON ("
REASON_CHARS = 80  # a brake reason or failure reason in the headline; the details keep all
HEADLINE_FAILURES = 3  # failed hosts named in the headline; the details list every one


def _one_line(text: str, limit: int = REASON_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters (the headline stays one short line)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def brake_text(brake: Brake | None) -> str:
    """``brake off`` or ``brake ON (hold) by ann: db failover``."""
    if brake is None:
        return BRAKE_OFF
    return f"{_BRAKE_ON}{brake.action}) by {_one_line(brake.by, 40)}: {_one_line(brake.reason)}"


@dataclass(frozen=True)
class Progress:
    """The headline of a running release: where, how many hosts, failures, the brake."""

    where: str  # "fort", "batch 2/3", "rolled back", …
    done: int
    total: int
    version: str
    failed: int
    budget: int
    brake: Brake | None = None
    failures: tuple[str, ...] = ()  # "web01 health (why)", one per failed host, if known
    now: str = ""  # what is happening right now, e.g. "web01 health-checking"

    def line(self) -> str:
        where = f"{self.where}: {self.now}" if self.now else self.where
        failed = f"{self.failed} failed (budget {self.budget})"
        if self.failures:
            shown = self.failures[:HEADLINE_FAILURES]
            more = len(self.failures) - len(shown)
            failed += ": " + ", ".join(shown) + (f", +{more} more (below)" if more else "")
        return (
            f"{where} · {self.done}/{self.total} hosts on {self.version} · {failed} · "
            f"{brake_text(self.brake)}"
        )


def failure_item(host: str, step: str, why: str) -> str:
    """One failed host for the headline: ``web01 health (did not pass …)``."""
    return f"{host} {step} ({_one_line(why, 60)})"


def failure_from_message(host: str, message: str) -> str:
    """``web01 failed@health: why — host …`` (a host task's failure) → ``web01 health (why)``."""
    prefix = f"{host} failed@"
    if not message.startswith(prefix):
        return failure_item(host, "failed", message or "see the task log")
    step, _, rest = message[len(prefix):].partition(": ")
    return failure_item(host, step, rest.split(" — host ", 1)[0])


def with_brake(note: str | None, brake: Brake | None) -> str:
    """``note`` with its headline's brake part set to ``brake`` (appended if it has none).

    The brake part is always last on the first line, so the rest of the note is kept as
    the task that wrote it left it.
    """
    lines = (note or "").split("\n")
    head = lines[0]
    cut = head.find(f" · {_BRAKE_ON}")
    if cut < 0 and head.endswith(f" · {BRAKE_OFF}"):
        cut = len(head) - len(f" · {BRAKE_OFF}")
    if cut >= 0:
        head = head[:cut]
    elif brake is None:
        return note or ""  # no brake shown and none to show: leave the note alone
    lines[0] = f"{head} · {brake_text(brake)}" if head else brake_text(brake)
    return "\n".join(lines)


def compose(headline: str, who: str, reason: str, ticket: str,
            details: Sequence[str] = ()) -> str:
    """The note: headline, who/why/ticket, then details (markdown)."""
    parts = [headline, "", f"by **{who or 'unknown'}**"
             + (f" · ticket {ticket}" if ticket else "") + (f" · {reason}" if reason else "")]
    if details:
        parts += [""] + [f"- {d}" for d in details]
    return "\n".join(parts)


NOTE_LIMIT = 1000  # Airflow keeps at most this many characters of a run note


def fit_note(note: str, limit: int = NOTE_LIMIT) -> str:
    """Cut a note to ``limit`` by dropping whole detail lines from the END, saying how many.

    Notes put what matters first (hosts not where they should be, the repair command), so
    those lines survive; the full list is always in the task log.
    """
    if len(note) <= limit:
        return note
    lines = note.splitlines()
    for keep in range(len(lines) - 1, 0, -1):
        dropped = len(lines) - keep
        text = "\n".join(lines[:keep] + [f"- … {dropped} more line(s): see the task log"])
        if len(text) <= limit:
            return text
    return note[: limit - 1] + "…"


def set_run_note(dag_id: str, run_id: str, note: str) -> bool:
    """Write the run note via the REST API; False (and a log line) when it cannot."""
    log.info("release note: %s", note.replace("\n", "\n    "))
    from tars_operators.client.api import ApiError

    for attempt in (1, 2):
        try:
            api = _note_api()
        except LookupError as exc:  # no connection configured: the log line above is all we have
            log.info("run note not written (%s)", exc)
            return False
        try:
            for text in (note, current_brake_note(dag_id, note)):
                if text is None:
                    break
                api.request("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}",
                            params={"update_mask": "note"}, json={"note": fit_note(text)})
            return True
        except ApiError as exc:
            _forget_note_api(api)
            if exc.status == 401 and attempt == 1:  # token expired or password changed: anew
                continue
            log.warning("run note not written: %s", exc)
        except Exception as exc:
            log.warning("run note not written: %s", exc)
        return False
    return False


# One REST client per process for the notes it writes: its connection looked up and its token
# taken once, not for every note (a multi-host task writes dozens). A 401 takes them anew.
_api_lock = threading.Lock()
_api: list[Airflow] = []


def _note_api() -> Airflow:
    from tars_operators.release.pools import task_api

    with _api_lock:
        if not _api:
            _api.append(task_api())
        return _api[0]


def _forget_note_api(api: Airflow) -> None:
    with _api_lock:
        if _api and _api[0] is api:
            _api.clear()


BRAKED_DAGS = ("tars_deploy__", "tars_canary__")


def current_brake_note(dag_id: str, note: str,
                       read: Callable[[str], Brake | None] | None = None) -> str | None:
    """``note`` again with the brake as it is now, when that differs from what it shows; None
    when it already shows it (or the brake cannot be read).

    The brake route writes every running release's note as it changes the brake. A note a
    task composed just before that and wrote just after would hide the change until the
    task's next write: read once more after writing (a lost update seen in CI: a pulled brake
    missing from the note for seconds).
    """
    app = next((dag_id[len(p):] for p in BRAKED_DAGS if dag_id.startswith(p)), None)
    if app is None:
        return None
    try:
        if read is None:
            from tars_operators.release.brake import read_brake

            read = read_brake
        fresh = with_brake(note, read(app))
    except Exception as exc:  # the note was written; the route's own write shows the brake
        log.info("brake not re-read after the note: %s", exc)
        return None
    return fresh if fresh != note else None
