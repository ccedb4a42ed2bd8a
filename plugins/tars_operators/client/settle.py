"""When an approval may be answered: after its task has been parked for a few seconds.

Airflow 3.3.2 loses an approval answered in the moment its task is parked. The task writes its
question, then parks in ``awaiting_input``; an answer that lands before the scheduler has read the
parking process's exit re-queues the task at once, and that exit's late "success" then makes the
scheduler fail the re-queued task ("task state changed externally"). Seen in real runs answered by
a script right after the ``approval_needed`` event (which fires before the question is written).

Every Tars answer path (``tars approve``, the REST client, the App tab's action) holds an answer
until the question has stood for ``SETTLE_SECONDS`` with its task parked. Pure: no Airflow import.
"""

from __future__ import annotations

from datetime import datetime

SETTLE_SECONDS = 5.0
PARKED = frozenset({"awaiting_input", "deferred"})
NOT_PARKED_YET = frozenset({None, "none", "scheduled", "queued", "running", "restarting"})


def answer_delay(state: str | None, asked_at: datetime | None, now: datetime) -> float | None:
    """Seconds to hold an answer: 0 to send it now, more to wait; None while the task has not
    parked yet (ask again). A finished task gets 0: Airflow gives its own answer (409)."""
    if state in NOT_PARKED_YET:
        return None
    if state not in PARKED or asked_at is None:
        return 0.0
    return max(0.0, SETTLE_SECONDS - (now - asked_at).total_seconds())
