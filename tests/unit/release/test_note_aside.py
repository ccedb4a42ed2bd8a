"""A one-host task's live run note ("host02 health-checking") is written from a thread of its
own: the host's health check never waits for it, and a later note (the failure, the end) waits
for it. CI saw one take 8 s while nine tasks started at once; the slow build's health wait,
meant to move to the triggerer, then found the app already up."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from tars_operators.operators.release_host import ReleaseHostOperator

pytestmark = pytest.mark.unit


def test_the_progress_note_does_not_hold_up_the_host_and_later_notes_wait_for_it() -> None:
    written: list[str] = []
    started = threading.Event()

    def slow_note(context: Any, *, now: str) -> None:
        started.set()
        time.sleep(0.5)
        written.append(now)

    task = SimpleNamespace(_noter=None, _live_note=slow_note)
    t0 = time.monotonic()
    ReleaseHostOperator._note_aside(task, {}, now="host02 health-checking")  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 0.2 and written == []
    assert started.wait(5)
    ReleaseHostOperator._notes_written(task)  # type: ignore[arg-type]
    assert written == ["host02 health-checking"] and task._noter is None
    ReleaseHostOperator._notes_written(task)  # type: ignore[arg-type]  # nothing aside: no wait
