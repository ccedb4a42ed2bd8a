"""The lease commands, run for real by a local ``sh`` on a deploy root with a hostile name."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import replace
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tars_operators.errors import InvalidValue, LeaseHeld, LeaseLost, RemoteCommandError
from tars_operators.hooks.ssh import CommandResult
from tars_operators.remote.layout import ReleaseLayout
from tars_operators.remote.lease import LOG_KEEP, LOG_TRIM_AT, AcquireRequest, LeaseBody, acquire_command
from tars_operators.steps.lease import (
    Holder,
    Lease,
    acquire,
    active_runs,
    parse_log,
    read_lease,
    read_lease_log,
    release,
    set_phase,
)

pytestmark = pytest.mark.unit
HOSTILE_DIR = "it's a $(touch pwned) `touch pwned2` dir; rm -rf x"
HOSTILE_RUN = "manual__'; touch pwned3; echo '$(touch pwned4)`touch pwned5`\"$HOME\" \\ *"
A, B = Holder("tars_deploy__demo", "manual__1"), Holder("tars_rollback__demo", HOSTILE_RUN)


class LocalSession:
    """A HostSession stand-in that runs commands with the local ``sh`` (dash here), like sshd would."""

    host = "local"

    def __init__(self, cwd: Path):
        self.cwd, self.commands = cwd, 0

    def run(self, command: str, *, step: str, check: bool = True, label: str | None = None,
            timeout: float | None = None) -> CommandResult:
        self.commands += 1
        started = time.monotonic()
        proc = subprocess.run(["sh", "-c", command], cwd=self.cwd, capture_output=True, text=True, timeout=30)
        if check and proc.returncode:
            raise RemoteCommandError(self.host, step, proc.returncode, proc.stderr)
        return CommandResult(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / HOSTILE_DIR / "app"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def layout(root: Path) -> ReleaseLayout:
    return ReleaseLayout(str(root))


@pytest.fixture
def session(tmp_path: Path) -> LocalSession:
    return LocalSession(tmp_path)


def alive(*holders: Holder):  # type: ignore[no-untyped-def]
    return lambda h: h in holders


def take(session: LocalSession, layout: ReleaseLayout, holder: Holder, *, wait: float = 0.0,
         active: tuple[Holder, ...] = (A, B), **kwargs: object) -> Lease:
    return acquire(session, layout, holder, phase=kwargs.pop("phase", "staging"),  # type: ignore[arg-type]
                   version=kwargs.pop("version", "2.0.0"), is_active=alive(*active), wait=wait,  # type: ignore[arg-type]
                   poll=0.02, **kwargs)  # type: ignore[arg-type]


def no_pwn(tmp_path: Path) -> None:
    assert not [p for p in tmp_path.rglob("pwned*")], "a hostile string was executed"


def test_acquire_phase_release_with_hostile_ids_and_path(session: LocalSession, layout: ReleaseLayout,
                                                         root: Path, tmp_path: Path) -> None:
    lease = take(session, layout, B, target="rollback to 1.0.0 'quoted' $(x)")
    assert session.commands == 1 and lease.holder == B and lease.previous is None
    assert lease.phase == "staging" and lease.version == "2.0.0" and lease.target == "rollback to 1.0.0 'quoted' $(x)"
    on_disk = (root / ".tars/lease").read_text().splitlines()
    assert on_disk[0] == f"holder\ttars_rollback__demo\t{HOSTILE_RUN}" and on_disk[2] == "phase\tstaging"
    assert read_lease(session, layout) == lease  # type: ignore[arg-type]
    moved = set_phase(session, layout, B, "activating")  # type: ignore[arg-type]
    assert (moved.phase, moved.version, moved.token, moved.since) == ("activating", "2.0.0", lease.token, lease.since)
    assert release(session, layout, B) == moved  # type: ignore[arg-type]
    assert read_lease(session, layout) is None and release(session, layout, B) is None  # type: ignore[arg-type]
    events = read_lease_log(session, layout)  # type: ignore[arg-type]
    assert [(e.event, e.holder, e.phase) for e in events] == [
        ("acquire", B, "staging"), ("phase", B, "activating"), ("release", B, "activating")]
    no_pwn(tmp_path)


def test_control_characters_are_refused_before_any_command(session: LocalSession, layout: ReleaseLayout) -> None:
    for bad in ("run\n1", "run\t1", "", "x\x00"):
        with pytest.raises(InvalidValue):
            take(session, layout, Holder("tars_deploy__demo", bad))
    with pytest.raises(InvalidValue, match="phase 'sleeping' is not one of"):
        take(session, layout, A, phase="sleeping")
    with pytest.raises(InvalidValue, match="version"):
        take(session, layout, A, version="1.0;rm -rf /")
    with pytest.raises(InvalidValue):
        take(session, layout, A, target="two\nlines")
    assert session.commands == 0


def test_a_second_run_is_refused_with_the_holder_named(session: LocalSession, layout: ReleaseLayout) -> None:
    first = take(session, layout, A, phase="out of rotation")
    with pytest.raises(LeaseHeld) as caught:
        take(session, layout, B)
    message = str(caught.value)
    assert message.startswith("local: lease: the host is held by tars_deploy__demo run manual__1 "
                              f"(phase out of rotation, version 2.0.0, since {first.since}, ")
    assert "let that run finish" in message and caught.value.holder == str(A)
    assert caught.value.phase == "out of rotation"
    assert read_lease(session, layout) == first  # type: ignore[arg-type]


def test_the_same_run_reenters_and_sees_where_it_was(session: LocalSession, layout: ReleaseLayout) -> None:
    first = take(session, layout, A)
    set_phase(session, layout, A, "checking")  # type: ignore[arg-type]
    again = take(session, layout, A, phase="restoring", version="1.0.0")
    assert (again.token, again.since, again.phase, again.version) == (first.token, first.since, "restoring", "1.0.0")
    assert again.reentered and again.previous is not None and again.previous.phase == "checking"


def test_a_stale_lease_is_taken_over_and_logged(session: LocalSession, layout: ReleaseLayout) -> None:
    take(session, layout, A, phase="out of rotation")
    said: list[str] = []
    lease = take(session, layout, B, active=(B,), log=said.append)
    assert lease.holder == B and lease.took_over and lease.previous.phase == "out of rotation"  # type: ignore[union-attr]
    assert len(said) == 1 and "took over the stale lease of tars_deploy__demo run manual__1 (phase out of rotation" in said[0]
    last = read_lease_log(session, layout)[-1]  # type: ignore[arg-type]
    assert (last.event, last.holder, last.detail) == (
        "takeover", B, "took over from tars_deploy__demo run manual__1 in phase out of rotation")
    with pytest.raises(LeaseHeld, match=r"held by tars_rollback__demo run .*not by tars_deploy__demo run manual__1"):
        set_phase(session, layout, A, "in rotation")  # type: ignore[arg-type]
    with pytest.raises(LeaseHeld, match="refusing to release it"):
        release(session, layout, A)  # type: ignore[arg-type]
    assert read_lease(session, layout) == replace(lease, previous=None)  # type: ignore[arg-type]


def test_racing_takers_of_a_stale_lease_one_wins(tmp_path: Path, layout: ReleaseLayout) -> None:
    dead = Holder("tars_deploy__demo", "gone")
    take(LocalSession(tmp_path), layout, dead)
    takers = [Holder("tars_rollback__demo", f"r{i}") for i in range(6)]
    start = threading.Barrier(len(takers))

    def one(holder: Holder) -> str:
        start.wait()
        try:
            take(LocalSession(tmp_path), layout, holder, active=tuple(takers))
            return "won"
        except LeaseHeld as exc:
            return exc.holder

    with ThreadPoolExecutor(len(takers)) as pool:
        outcomes = list(pool.map(one, takers))
    winners = [str(h) for h, o in zip(takers, outcomes) if o == "won"]
    assert len(winners) == 1 and all(o == winners[0] for o in outcomes if o != "won")
    takeovers = [e for e in parse_log((Path(layout.deploy_root) / ".tars/lease.log").read_text()) if e.event == "takeover"]
    assert [str(e.holder) for e in takeovers] == winners


def test_a_waiting_run_gets_the_lease_once_released(session: LocalSession, layout: ReleaseLayout,
                                                    tmp_path: Path) -> None:
    take(session, layout, A)
    said: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(take, LocalSession(tmp_path), layout, B, wait=20.0, log=said.append)
        deadline = time.monotonic() + 10
        while not said and time.monotonic() < deadline:
            time.sleep(0.01)
        assert said and "waiting up to 20 s for the lease held by tars_deploy__demo run manual__1" in said[0]
        release(session, layout, A)  # type: ignore[arg-type]
        assert waiting.result(timeout=20).holder == B
    kinds = [(e.event, e.holder) for e in read_lease_log(session, layout)]  # type: ignore[arg-type]
    assert kinds == [("acquire", A), ("release", A), ("acquire", B)]


def test_phase_without_a_lease_is_refused(session: LocalSession, layout: ReleaseLayout, root: Path) -> None:
    with pytest.raises(LeaseLost, match="no longer holds the lease"):
        set_phase(session, layout, A, "checking")  # type: ignore[arg-type]
    assert release(session, layout, A) is None  # type: ignore[arg-type]
    assert not (root / ".tars").exists()  # reading and releasing create nothing


def test_the_log_keeps_its_last_lines(session: LocalSession, layout: ReleaseLayout, root: Path) -> None:
    (root / ".tars").mkdir()
    old = "".join(f"2020-01-01T00:00:00.000Z\tphase\td\tr{i}\tstaging\t1.0\t\n" for i in range(LOG_TRIM_AT))
    (root / ".tars/lease.log").write_text(old)
    take(session, layout, A)
    lines = (root / ".tars/lease.log").read_text().splitlines()
    assert len(lines) == LOG_KEEP and lines[-1].split("\t")[1:4] == ["acquire", A.dag_id, A.run_id]
    assert lines[0].split("\t")[3] == f"r{LOG_TRIM_AT - LOG_KEEP + 1}"


def test_a_damaged_lease_is_held_by_an_unknown_run_and_taken_over(session: LocalSession, layout: ReleaseLayout,
                                                                    root: Path) -> None:
    (root / ".tars").mkdir()
    (root / ".tars/lease").write_text("edited by hand\n")
    with pytest.raises(LeaseHeld, match=r"held by \? run \? \(phase unknown"):
        take(session, layout, A, active=(Holder("?", "?"),))
    assert take(session, layout, A).took_over


def test_the_takeover_compare_is_exact(session: LocalSession, layout: ReleaseLayout, root: Path) -> None:
    take(session, layout, A)
    body = LeaseBody("staging", "2.0.0", "", "2030-01-01T00:00:00.000Z")
    seen = ("holder\ttars_deploy__demo\tmanual__1", "acquired\tother\t2020")  # right holder, wrong token
    wrong = AcquireRequest(B.dag_id, B.run_id, "t0k", body.updated, body, expect=seen)
    proc = subprocess.run(["sh", "-c", acquire_command(layout, wrong)], capture_output=True, text=True)
    assert proc.returncode == 80 and proc.stdout.startswith("@@held\nholder\ttars_deploy__demo\tmanual__1\n")
    assert sorted(os.listdir(root / ".tars")) == ["lease", "lease.lock", "lease.log"]


def test_active_runs_asks_airflow_for_queued_or_running_runs() -> None:
    class Ti:  # the one Task SDK call active_runs makes, answered for run r1 only
        def get_dr_count(self, dag_id: str, logical_dates: object = None, run_ids: list[str] | None = None,
                         states: list[str] | None = None) -> int:
            assert states == ["queued", "running"]
            return int(dag_id == "tars_deploy__demo" and run_ids == ["r1"])

    is_active = active_runs(Ti())
    assert is_active(Holder("tars_deploy__demo", "r1")) and not is_active(Holder("tars_deploy__demo", "r2"))
    assert not is_active(Holder("?", "?"))
