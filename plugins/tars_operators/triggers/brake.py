"""Wait, in the triggerer, while an app's brake is pulled (no worker slot is held)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

from tars_operators.release.brake import brake_key, parse_brake
from tars_operators.triggers import guard


class BrakeReleasedTrigger(BaseTrigger):
    """Fires when the brake of ``app`` is released, or turned into a rollback request."""

    def __init__(self, app: str, poll_seconds: float = 1.0):
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger is unannotated
        self.app = app
        self.poll_seconds = poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "tars_operators.triggers.brake.BrakeReleasedTrigger",
            {"app": self.app, "poll_seconds": self.poll_seconds},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow.sdk import Variable
        from asgiref.sync import sync_to_async

        get = sync_to_async(Variable.get)
        started = time.monotonic()
        while True:
            brake = parse_brake(await get(brake_key(self.app), default=None))
            if brake is None:
                await guard.resume_guard(started, guard.RESUME_GUARD_SECONDS)
                yield TriggerEvent({"brake": "released"})
                return
            if brake.action == "rollback":
                await guard.resume_guard(started, guard.RESUME_GUARD_SECONDS)
                yield TriggerEvent({"brake": "rollback", "by": brake.by, "reason": brake.reason})
                return
            await asyncio.sleep(self.poll_seconds)
