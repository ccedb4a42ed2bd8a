"""Follow a run to its end, printing stage-by-stage progress (``tars deploy --wait``)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO

from tars_operators.client.api import Airflow, ApiError
from tars_operators.client.progress import Snapshot, changes, outcome, snapshot

TERMINAL = {"success", "failed"}
LOST_AFTER = 120.0  # seconds of failed polls (api-server restart, network blip) before giving up


def say(line: str, out: TextIO | None = None) -> None:
    """One timestamped progress line, flushed at once (CI logs stream it)."""
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=out or sys.stdout, flush=True)


@dataclass
class Follow:
    """Polls a run until it ends; :meth:`run` returns the exit code (0 success, 1 otherwise)."""

    api: Airflow
    dag_id: str
    run_id: str
    timeout: float = 7200.0
    poll: float = 2.0
    approve_hint: str = ""
    out: TextIO | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    last: Snapshot | None = field(default=None, init=False)

    def run(self) -> int:
        deadline = self.clock() + self.timeout
        while True:
            snap = self._poll()
            for line in changes(self.last, snap, approve_hint=self.approve_hint):
                say(line, self.out)
            self.last = snap
            if snap.state in TERMINAL:
                code, why = outcome(snap)
                say(why, self.out)
                return code
            if self.clock() > deadline:
                say(f"gave up waiting after {self.timeout:.0f}s: the run is {snap.state} and "
                    f"goes on (tars status {self.dag_id.split('__', 1)[-1]} {self.run_id})",
                    self.out)
                return 1
            self.sleep(self.poll)

    def _poll(self) -> Snapshot:
        """The run's snapshot; tolerates a blip of the API (not auth or a missing run)."""
        failing_since: float | None = None
        relogged = False
        while True:
            try:
                run = self.api.run(self.dag_id, self.run_id)
                return snapshot(run, self.api.task_instances(self.dag_id, self.run_id))
            except ApiError as exc:
                if exc.status == 401 and self.api.user and not relogged:
                    self.api.token, relogged = "", True  # the JWT expired: log in again
                    continue
                if exc.status is not None and exc.status < 500:
                    raise
                failing_since = failing_since if failing_since is not None else self.clock()
                if self.clock() - failing_since > LOST_AFTER:
                    raise ApiError(f"lost contact with Airflow for {LOST_AFTER:.0f}s ({exc}); "
                                   f"run {self.run_id} may still be going", 503) from None
            self.sleep(self.poll)
