"""The per-host lease against the sandbox's real sshd: one writer per host, phases, take-overs."""

from __future__ import annotations

import json
import shlex
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import pytest

from sandbox import Sandbox
from sandbox.layout import Host as SbHost
from tars_operators.errors import LeaseHeld, LeaseLost, RemoteCommandError
from tars_operators.hooks.ssh import CommandResult, HostSession, SessionParams
from tars_operators.remote.layout import ReleaseLayout
from tars_operators.steps.state import read_host_state
from tars_operators.steps.lease import (
    Holder,
    LeaseEvent,
    acquire,
    parse_log,
    read_lease,
    queue_phase,
    queue_read_lease,
    read_lease_log,
    release,
    set_phase,
)

pytestmark = pytest.mark.integration
DEPLOY, ROLLBACK = Holder("tars_deploy__demo", "manual__2030-01-01T00:00:00+00:00"), Holder("tars_rollback__demo", "manual__r1")
HOSTILE = Holder("tars_canary__demo", "x'; touch /tmp/tars-lease-pwned; echo '$(id)`id`")


class CountingSession(HostSession):
    """A real session that counts its SSH commands (the cost of one lease operation)."""

    commands = 0

    def run(self, command: str, **kwargs: object) -> CommandResult:  # type: ignore[override]
        self.commands += 1
        return super().run(command, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def host(fleet: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[SbHost]:
    monkeypatch.setenv("AIRFLOW_CONN_TARS_SANDBOX", json.dumps(fleet.connection_json))
    yield fleet.hosts[0]


def session(h: SbHost) -> CountingSession:
    return CountingSession(SessionParams(host=h.name, address=h.address, port=h.ssh_port,
                                         conn_id="tars_sandbox", connect_timeout=5, command_timeout=30))


def layout(h: SbHost) -> ReleaseLayout:
    return ReleaseLayout(str(h.deploy_root))


def active(*holders: Holder) -> Callable[[Holder], bool]:
    return lambda h: h in holders


def one_writer_at_a_time(events: list[LeaseEvent]) -> None:
    """Replay the host's lease log: nobody acts on the host while another run holds it."""
    owner: Holder | None = None
    for e in events:
        if e.event == "acquire":
            assert owner is None, f"{e.holder} acquired while {owner} held the host"
        elif e.event == "takeover":
            assert owner not in (None, e.holder), f"{e.holder} took over from {owner}"
        else:
            assert owner == e.holder, f"{e.event} by {e.holder} while {owner} held the host"
        owner = None if e.event == "release" else e.holder


def test_two_runs_at_once_one_wins_the_other_is_told_who(host: SbHost) -> None:
    start = threading.Barrier(2)

    def run(holder: Holder) -> str:
        with session(host) as s:
            s.connect()
            start.wait()
            try:
                acquire(s, layout(host), holder, phase="staging", version="2.0.0",
                        is_active=active(DEPLOY, ROLLBACK), wait=0)
            except LeaseHeld as exc:
                return str(exc)
            return "won"

    with ThreadPoolExecutor(2) as pool:
        outcomes = dict(zip((DEPLOY, ROLLBACK), pool.map(run, (DEPLOY, ROLLBACK))))
    assert list(outcomes.values()).count("won") == 1
    winner = next(h for h, o in outcomes.items() if o == "won")
    loser = ROLLBACK if winner == DEPLOY else DEPLOY
    assert outcomes[loser].startswith(f"{host.name}: lease: the host is held by {winner} (phase staging, "
                                      "version 2.0.0, since ")
    with session(host) as s:
        lease = read_lease(s, layout(host))
        assert lease is not None and lease.holder == winner
        release(s, layout(host), winner)
        one_writer_at_a_time(read_lease_log(s, layout(host)))


def test_a_waiting_run_gets_the_host_when_the_holder_is_done(host: SbHost) -> None:
    said: list[str] = []
    with session(host) as holder_s, ThreadPoolExecutor(1) as pool:
        acquire(holder_s, layout(host), DEPLOY, phase="activating", version="2.0.0",
                is_active=active(DEPLOY, ROLLBACK), wait=0)

        def wait_for_it() -> str:
            with session(host) as s:
                return acquire(s, layout(host), ROLLBACK, phase="restoring", version="1.0.0",
                               is_active=active(DEPLOY, ROLLBACK), wait=30, poll=0.1, log=said.append).phase

        waiting = pool.submit(wait_for_it)
        deadline = time.monotonic() + 15
        while not said and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(said) == 1 and said[0].startswith(
            f"{host.name}: waiting up to 30 s for the lease held by {DEPLOY} (phase activating, version 2.0.0, since ")
        set_phase(holder_s, layout(host), DEPLOY, "done")
        release(holder_s, layout(host), DEPLOY)
        assert waiting.result(timeout=30) == "restoring"
        events = read_lease_log(holder_s, layout(host))
    assert [(e.event, e.holder, e.phase) for e in events] == [
        ("acquire", DEPLOY, "activating"), ("phase", DEPLOY, "done"), ("release", DEPLOY, "done"),
        ("acquire", ROLLBACK, "restoring")]
    one_writer_at_a_time(events)


def test_a_dead_runs_lease_is_taken_over_by_exactly_one_run(host: SbHost) -> None:
    dead = Holder("tars_deploy__demo", "manual__died")
    with session(host) as s:
        acquire(s, layout(host), dead, phase="out of rotation", version="2.0.0", is_active=active(), wait=0)
    takers = [Holder("tars_rollback__demo", f"manual__{i}") for i in range(4)]
    start = threading.Barrier(len(takers))

    def take(holder: Holder) -> tuple[str, str]:
        with session(host) as s:
            s.connect()
            start.wait()
            try:
                lease = acquire(s, layout(host), holder, phase="restoring", version="1.0.0",
                                is_active=active(*takers), wait=0)
            except LeaseHeld as exc:
                return "refused", exc.holder
            assert lease.previous is not None
            return "won", lease.previous.phase

    with ThreadPoolExecutor(len(takers)) as pool:
        outcomes = list(pool.map(take, takers))
    won = [t for t, o in zip(takers, outcomes) if o[0] == "won"]
    assert len(won) == 1 and outcomes[takers.index(won[0])] == ("won", "out of rotation")
    assert all(o == ("refused", str(won[0])) for o in outcomes if o[0] == "refused")
    log = parse_log((host.deploy_root / ".tars/lease.log").read_text())
    one_writer_at_a_time(log)
    assert log[-1].event == "takeover" and log[-1].detail == f"took over from {dead} in phase out of rotation"


def test_the_phase_is_on_the_host_for_anyone_and_only_the_holder_changes_it(host: SbHost) -> None:
    with session(host) as s:
        acquire(s, layout(host), HOSTILE, phase="staging", version="2.0.0", target="deploy 2.0.0",
                is_active=active(HOSTILE), wait=0)
        set_phase(s, layout(host), HOSTILE, "out of rotation")
    with session(host) as other:  # a later run, the gate or a repair reads where the host stands
        seen = read_lease(other, layout(host))
        assert seen is not None and (seen.holder, seen.phase, seen.version, seen.target) == (
            HOSTILE, "out of rotation", "2.0.0", "deploy 2.0.0")
        with pytest.raises(LeaseHeld, match=r"refusing to record phase 'in rotation'"):
            set_phase(other, layout(host), ROLLBACK, "in rotation")
        with pytest.raises(LeaseHeld, match="refusing to release it"):
            release(other, layout(host), ROLLBACK)
        assert read_lease(other, layout(host)) == seen
        assert release(other, layout(host), HOSTILE) == seen
        with pytest.raises(LeaseLost, match="no longer holds the lease"):
            set_phase(other, layout(host), HOSTILE, "done")
    lines = (host.deploy_root / ".tars/lease.log").read_text().splitlines()
    assert [line.split("\t")[3] for line in lines] == [HOSTILE.run_id] * 3
    assert not Path("/tmp/tars-lease-pwned").exists()


def test_a_phase_sent_ahead_rides_with_the_next_command_and_stops_it_when_refused(
        host: SbHost) -> None:
    flag = host.deploy_root / "ran-after-a-refused-phase"
    with session(host) as s:
        acquire(s, layout(host), DEPLOY, phase="staging", version="2.0.0",
                is_active=active(DEPLOY), wait=0)
        queue_phase(s, layout(host), DEPLOY, "activating", "2.0.0")
        sent = s.commands
        got = s.run("printf 'first\\nsecond'; echo oops >&2; exit 3", step="activate", check=False)
        assert s.commands == sent + 1  # one round trip for both
        assert (got.exit_code, got.stdout, got.stderr) == (3, "first\nsecond", "oops\n")
        seen = read_lease(s, layout(host))
        assert seen is not None and (seen.holder, seen.phase) == (DEPLOY, "activating")
        # A run that does not hold the host: its phase is refused, the command after it never runs.
        queue_phase(s, layout(host), ROLLBACK, "in rotation")
        with pytest.raises(LeaseHeld, match=r"refusing to record phase 'in rotation'"):
            s.run(f"touch {shlex.quote(str(flag))}", step="prune")
        assert not flag.exists()
        with pytest.raises(LeaseHeld):  # still queued: nothing more runs on the host for it
            s.run(f"touch {shlex.quote(str(flag))}", step="mark")
        assert not flag.exists()
    seen = read_lease(session(host), layout(host))
    assert seen is not None and seen.phase == "activating"


def test_output_sent_ahead_cannot_forge_where_it_ends(host: SbHost) -> None:
    """A queued command's output (a file the host holds) with a mark of its own in it."""
    got: list[CommandResult] = []
    with session(host) as s:
        s.queue("printf 'x\\n@@tars-ahead-00000000 0\\ny'; exit 0", step="lease", label="forge",
                settle=got.append)
        assert s.run("echo real", step="stage").stdout == "real\n"
        assert got[0].stdout == "x\n@@tars-ahead-00000000 0\ny" and got[0].exit_code == 0
        s.queue("echo broken; exit 7", step="lease", label="fails", settle=got.append)
        with pytest.raises(RemoteCommandError, match="exit 7|7") as caught:
            s.run(f"touch {shlex.quote(str(host.deploy_root / 'never'))}", step="stage")
        assert caught.value.step == "lease" and not (host.deploy_root / "never").exists()


def test_each_operation_is_one_round_trip(host: SbHost) -> None:
    timings: dict[str, list[float]] = {"true": [], "acquire": [], "set_phase": [], "release": []}
    with session(host) as s:
        s.connect()
        for i in range(15):
            holder = Holder("tars_deploy__demo", f"manual__{i}")
            for name, call in (
                ("true", lambda: s.run("true", step="baseline")),  # the floor: an empty command
                ("acquire", lambda: acquire(s, layout(host), holder, phase="staging", version="2.0.0",
                                            is_active=active(), wait=0)),
                ("set_phase", lambda: set_phase(s, layout(host), holder, "activating")),
                ("release", lambda: release(s, layout(host), holder)),
            ):
                before, started = s.commands, time.perf_counter()
                call()
                timings[name].append((time.perf_counter() - started) * 1000)
                assert s.commands == before + 1, f"{name} took {s.commands - before} SSH commands"
    print("lease ms (median, max): " + ", ".join(
        f"{k} {statistics.median(v):.1f}/{max(v):.1f}" for k, v in timings.items()))


def test_the_lease_read_with_the_host_state_is_one_round_trip(host: SbHost) -> None:
    """What the end of a run reads on every host (``release.truth``): the state and the lease."""
    with session(host) as s:
        lease_of = queue_read_lease(s, layout(host))
        state = read_host_state(s, layout(host))
        assert s.commands == 1 and lease_of() is None and state.current is not None
        acquire(s, layout(host), DEPLOY, phase="staging", version="2.0.0",
                is_active=active(DEPLOY), wait=0)
        set_phase(s, layout(host), DEPLOY, "in rotation", "2.0.0")
        before = s.commands
        lease_of = queue_read_lease(s, layout(host))
        again = read_host_state(s, layout(host))
        seen = lease_of()
        assert s.commands == before + 1 and again == state
        assert seen is not None and (seen.holder, seen.phase, seen.version) == (
            DEPLOY, "in rotation", "2.0.0")
        release(s, layout(host), DEPLOY)
