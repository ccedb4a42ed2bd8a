"""How soon a trigger may resume its task after the task deferred.

Airflow 3.3.2 can fail a task whose trigger fires within a few seconds of its deferral: the
executor's stale "success" for the deferring attempt is processed after the resumed attempt
is already running, and the scheduler marks it failed (apache/airflow#71580, #72716, open).
So no Tars trigger resumes a task sooner than this after it started waiting
(TARS_RESUME_GUARD_SECONDS in the triggerer's environment; 0 once Airflow is fixed).
"""

from __future__ import annotations

import asyncio
import os
import time

RESUME_GUARD_SECONDS = float(os.environ.get("TARS_RESUME_GUARD_SECONDS", "8"))


async def resume_guard(started: float, seconds: float = RESUME_GUARD_SECONDS) -> None:
    """Hold an event until ``seconds`` after the wait began (``started``: time.monotonic())."""
    left = started + seconds - time.monotonic()
    if left > 0:
        await asyncio.sleep(left)
