"""What the SSH benchmarks share: a sandbox of their own, held under the test sandbox lock."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sandbox import Sandbox

LOCK_FILE = Path(os.environ.get("TARS_TEST_LOCK", "/tmp/tars-sandbox-tests.lock"))


@contextmanager
def locked_sandbox(directory: str, first_address: int, hosts: int = 1) -> Iterator[Sandbox]:
    """The sandbox at ``directory``: started with ``hosts`` hosts (and stopped after) unless it
    is up already. Holds the test sandbox lock (``TARS_TEST_LOCK``) throughout, so a benchmark
    never overlaps a test session's fleets."""
    with open(LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sb = Sandbox(directory, first_address=first_address)
        owned = not sb.is_up()
        if owned:
            sb.up(hosts=hosts)
        try:
            yield sb
        finally:
            if owned:
                sb.down()
