"""Shared fixtures: the sandbox fleet (session-wide) and fresh sandboxes for tests that need their own.

Sandboxes bind fixed loopback addresses, so a machine-wide lock keeps two pytest sessions from
starting overlapping fleets. The session fleet uses 127.0.0.51.. (not .11, where a developer's
`python -m sandbox up` lives); fresh sandboxes get blocks from 127.0.0.101 up.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sandbox import Sandbox  # noqa: E402

SESSION_HOSTS = 10
SESSION_FIRST_ADDRESS = int(os.environ.get("TARS_TEST_FIRST_ADDRESS", "51"))
FRESH_BLOCKS = (101, 126, 151, 176, 201)  # 25 addresses each (the last one 54)
LOCK_FILE = Path(os.environ.get("TARS_TEST_LOCK", "/tmp/tars-sandbox-tests.lock"))
LOCK_TIMEOUT = 900.0

# Every sandbox a fixture started; atexit stops whatever a crash left behind.
_started: list[Sandbox] = []

# The whole suite takes about 50 minutes here. A run far beyond that is a run whose tests wait
# out their timeouts one after another (a broken stack): stop it while there is time to report
# what failed, instead of being cut off by CI's own limit with nothing said.
SUITE_DEADLINE_MINUTES = float(os.environ.get("TARS_TEST_DEADLINE_MINUTES", "72"))
_SUITE_STARTED = time.monotonic()


def pytest_runtest_setup(item: pytest.Item) -> None:
    ran = (time.monotonic() - _SUITE_STARTED) / 60
    if ran > SUITE_DEADLINE_MINUTES:
        pytest.exit(f"the suite has run {ran:.0f} min, over its {SUITE_DEADLINE_MINUTES:.0f}-min "
                    f"deadline (TARS_TEST_DEADLINE_MINUTES), so it stops before {item.nodeid}; "
                    f"the failures above are the cause (the whole suite takes ≈ 50 min)",
                    returncode=1)


def _down_all() -> None:
    while _started:
        sb = _started.pop()
        try:
            sb.down()
        except Exception as exc:  # noqa: BLE001 — best effort at interpreter exit
            print(f"sandbox at {sb.dir} not stopped cleanly: {exc}", file=sys.stderr)


atexit.register(_down_all)


def _untrack(sb: Sandbox) -> None:
    if sb in _started:
        _started.remove(sb)


def _held_by_ancestor(path: Path) -> bool:
    """Whether a process this session runs under (e.g. ``flock(1)``) holds ``path``'s lock."""
    try:
        inode = os.stat(path).st_ino
        locks = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return False
    holders = {int(f[4]) for f in (line.split() for line in locks)
               if len(f) > 5 and f[1] == "FLOCK" and f[4].isdigit()
               and f[5].rsplit(":", 1)[-1] == str(inode)}
    pid = os.getppid()
    while pid > 1:
        if pid in holders:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


@pytest.fixture(scope="session")
def _sandbox_lock() -> Iterator[None]:
    """Machine-wide lock on the test address ranges, held for the whole session."""
    with open(LOCK_FILE, "a") as lock:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if _held_by_ancestor(LOCK_FILE):  # `flock LOCK pytest …` already holds it for us
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"another test session holds {LOCK_FILE} for over {LOCK_TIMEOUT:.0f}s")
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def sandbox(_sandbox_lock: None) -> Iterator[Sandbox]:
    """The session fleet: 10 hosts in $TARS_SANDBOX_DIR or <repo>/.sandbox-test, up once.

    A sandbox given through TARS_SANDBOX_DIR that is already up is reused and left running.
    """
    env_dir = os.environ.get("TARS_SANDBOX_DIR")
    sb = Sandbox(env_dir or REPO / ".sandbox-test", first_address=SESSION_FIRST_ADDRESS)
    owned = not (env_dir and sb.is_up())
    if owned:
        _started.append(sb)
    try:
        if not sb.is_up():
            sb.up(hosts=SESSION_HOSTS)
        yield sb
    finally:
        if owned:
            sb.down()
            _untrack(sb)


@pytest.fixture
def fleet(sandbox: Sandbox) -> Sandbox:
    """The session fleet reset to the baseline: every host on 1.0.0, UP in HAProxy."""
    if not sandbox.is_up():  # a test took it down (or something crashed): bring it back
        sandbox.up(hosts=SESSION_HOSTS)
    sandbox.reset()
    return sandbox


FreshSandbox = Callable[..., Sandbox]


@pytest.fixture
def fresh_sandbox(_sandbox_lock: None) -> Iterator[FreshSandbox]:
    """Factory: fresh_sandbox(hosts=3, start=True, **Sandbox kwargs) → a sandbox of the test's own.

    Each one gets its own dir (<repo>/.sandbox-f<first address>) and address block; all are
    stopped after the test.
    """
    made: list[Sandbox] = []

    def make(hosts: int = 3, *, start: bool = True, **kwargs: object) -> Sandbox:
        if len(made) >= len(FRESH_BLOCKS):
            raise RuntimeError(f"at most {len(FRESH_BLOCKS)} fresh sandboxes per test")
        first = FRESH_BLOCKS[len(made)]
        if hosts > 25 or first + hosts - 1 > 254:
            raise ValueError(f"{hosts} hosts do not fit the address block at 127.0.0.{first}")
        sb = Sandbox(REPO / f".sandbox-f{first}", first_address=first, **kwargs)  # type: ignore[arg-type]
        made.append(sb)
        _started.append(sb)
        sb.down()  # leftovers of a crashed session would make up() a no-op
        if start:
            sb.up(hosts=hosts)
        return sb

    try:
        yield make
    finally:
        for sb in made:
            sb.down()
            _untrack(sb)
