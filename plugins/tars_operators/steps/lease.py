"""One writer per host: the lease a Tars run holds on the hosts it changes, and its phase.

Every Tars DAG of an app (deploy, canary, rollback) takes the lease of a host before it
changes it and records where its work stands (``phase``); a second run waits (bounded) or is
refused with the holder named; the lease of a run that is gone is taken over, exactly one
taker winning. Each call is one SSH round trip (``remote.lease`` builds the commands);
``queue_phase`` has none of its own: it rides with the session's next command.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Protocol

from tars_operators.errors import LeaseHeld, LeaseLost, RemoteCommandError
from tars_operators.remote.layout import ReleaseLayout, rand_token
from tars_operators.remote.lease import (
    EVENT_MARK,
    EXIT_HELD,
    EXIT_NO_LEASE,
    EXIT_NOT_HOLDER,
    HELD_MARK,
    KEYS,
    PREVIOUS_MARK,
    AcquireRequest,
    Event,
    LeaseBody,
    Phase,
    acquire_command,
    check_phase,
    clean_text,
    phase_command,
    read_command,
    release_command,
)
from tars_operators.remote.validate import validate_version
from tars_operators.steps.state import now_iso, parse_time

if TYPE_CHECKING:
    from tars_operators.hooks.ssh import CommandResult, HostSession

_log = logging.getLogger(__name__)
STEP = "lease"


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: one Airflow run (``dag_id`` + ``run_id``); its tasks share it."""

    dag_id: str
    run_id: str

    def __post_init__(self) -> None:
        clean_text(self.dag_id, "dag_id", empty=False)
        clean_text(self.run_id, "run_id", empty=False)

    def __str__(self) -> str:
        return f"{self.dag_id} run {self.run_id}"


@dataclass(frozen=True)
class Lease:
    """The lease as the host has it; ``previous`` is what this acquisition found there."""

    host: str
    holder: Holder
    token: str
    since: str
    phase: str
    version: str
    target: str
    updated: str
    head: tuple[str, str]  # lines 1-2 as read: what a take-over compares
    previous: Lease | None = None

    @property
    def took_over(self) -> bool:
        return self.previous is not None and self.previous.holder != self.holder

    @property
    def reentered(self) -> bool:
        return self.previous is not None and self.previous.holder == self.holder

    def describe(self, now: datetime | None = None) -> str:
        """``tars_deploy__demo run r1 (phase activating, version 2.0.0, since …Z, 12 s ago)``."""
        age = ((now or datetime.now(timezone.utc)) - parse_time(self.since)).total_seconds()
        what = f"phase {self.phase}" + (f", version {self.version}" if self.version else "")
        since = f"since {self.since}, {_ago(age)}" if self.since else "since an unknown time"
        return f"{self.holder} ({what}, {since})"


@dataclass(frozen=True)
class LeaseEvent:
    """One line of ``.tars/lease.log``."""

    time: str
    event: Event
    holder: Holder
    phase: str
    version: str
    detail: str


class RunCounter(Protocol):
    """What ``active_runs`` needs of a task instance (``context["ti"]`` in a task)."""

    def get_dr_count(self, dag_id: str, logical_dates: list[datetime] | None = None,
                     run_ids: list[str] | None = None, states: list[str] | None = None) -> int: ...


def active_runs(ti: RunCounter) -> Callable[[Holder], bool]:
    """``is_active`` for tasks: the holder's run is queued or running (a deleted run is not).

    Counts instead of ``get_dagrun_state``, which fails on a run that no longer exists.
    """
    def is_active(holder: Holder) -> bool:
        return holder.dag_id != "?" and ti.get_dr_count(
            dag_id=holder.dag_id, run_ids=[holder.run_id], states=["queued", "running"]) > 0
    return is_active


def _ago(seconds: float) -> str:
    if seconds < 0 or seconds > 10 * 365 * 86400:
        return "age unknown"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago" if seconds < 7200 else f"{seconds / 3600:.1f} h ago"


def parse_lease(host: str, text: str) -> Lease | None:
    """Parse the lease file; a lease whose lines are damaged is held by ``? run ?``."""
    lines = [line for line in text.splitlines() if line and not line.startswith("@@")]
    if not lines:
        return None
    fields: dict[str, list[str]] = {}
    for line in lines[: len(KEYS)]:
        key, _, rest = line.partition("\t")
        fields[key] = rest.split("\t")
    holder_f, acquired_f = fields.get("holder", []), fields.get("acquired", [])
    holder = Holder(*holder_f) if len(holder_f) == 2 and all(holder_f) else Holder("?", "?")

    def one(key: str) -> str:
        return "\t".join(fields.get(key, [""]))

    return Lease(host=host, holder=holder, token=acquired_f[0] if acquired_f else "",
                 since=acquired_f[1] if len(acquired_f) > 1 else "", phase=one("phase") or "unknown",
                 version=one("version"), target=one("target"), updated=one("updated"),
                 head=(lines[0], lines[1] if len(lines) > 1 else ""))


def parse_log(text: str) -> list[LeaseEvent]:
    """Parse ``.tars/lease.log`` (tab-separated: time event dag run phase version detail)."""
    events = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 7 and parts[1] in ("acquire", "reenter", "takeover", "phase", "release"):
            events.append(LeaseEvent(parts[0], parts[1], Holder(parts[2], parts[3]),  # type: ignore[arg-type]
                                     parts[4], parts[5], parts[6]))
    return events


def read_lease(session: HostSession, layout: ReleaseLayout) -> Lease | None:
    """The host's lease, or None when no run holds it."""
    result = session.run(read_command(layout), step=STEP, label="read lease")
    return parse_lease(session.host, result.stdout)


def queue_read_lease(session: HostSession, layout: ReleaseLayout) -> Callable[[], Lease | None]:
    """``read_lease`` sent ahead of the session's next command, in its round trip
    (``HostSession.queue``); once that command has run, the returned function gives the lease."""
    found: list[Lease | None] = []
    session.queue(read_command(layout), step=STEP, label="read lease",
                  settle=lambda result: found.append(parse_lease(session.host, result.stdout)))

    def lease() -> Lease | None:
        if not found:
            raise RuntimeError(f"{session.host}: the lease was read with no command after it")
        return found[-1]
    return lease


def read_lease_log(session: HostSession, layout: ReleaseLayout, lines: int = 1000) -> list[LeaseEvent]:
    """The last ``lines`` events of the host's lease log, oldest first."""
    result = session.run(read_command(layout, log_lines=lines), step=STEP, label="read lease log")
    return parse_log(result.stdout.partition(EVENT_MARK + "log\n")[2])


def _sections(result: CommandResult) -> dict[str, str]:
    """Split an acquire/phase/release output at its marks: {'held'|'previous'|'event:<e>': text}."""
    sections: dict[str, list[str]] = {}
    current = sections.setdefault("", [])
    for line in result.stdout.splitlines():
        if line in (HELD_MARK, PREVIOUS_MARK):
            current = sections.setdefault(line[2:], [])
        elif line.startswith(EVENT_MARK):
            current = sections.setdefault("event:" + line[len(EVENT_MARK):], [])
        else:
            current.append(line)
    return {key: "\n".join(lines) for key, lines in sections.items()}


def _event(sections: dict[str, str]) -> tuple[str, str]:
    return next(((k[6:], v) for k, v in sections.items() if k.startswith("event:")), ("", ""))


def _unexpected(host: str, result: CommandResult) -> RemoteCommandError:
    return RemoteCommandError(host, STEP, result.exit_code, result.stderr or result.stdout)


def acquire(
    session: HostSession, layout: ReleaseLayout, holder: Holder, *, phase: Phase, version: str,
    is_active: Callable[[Holder], bool], wait: float, poll: float = 2.0, target: str = "",
    log: Callable[[str], None] | None = None,
) -> Lease:
    """Take the host's lease for ``holder`` (kept if it already has it); wait up to ``wait`` s.

    A lease held by a run for which ``is_active`` is False is taken over (one taker wins);
    ``Lease.previous`` says what was found (phase of a dead run, or of this run's last try).
    Raises LeaseHeld naming the holder when it is still held after ``wait`` seconds.
    """
    check_phase(phase)
    if version:
        validate_version(version)
    say = log or _log.info
    deadline, takeovers, waiting = time.monotonic() + max(wait, 0.0), 3, False
    stale: Lease | None = None
    while True:
        result = session.run(_acquire_cmd(layout, holder, phase, version, target, stale),
                             step=STEP, check=False, label=f"acquire the lease for {holder}")
        sections = _sections(result)
        if result.exit_code == 0:
            return _acquired(session, holder, sections, say, waiting)
        if result.exit_code != EXIT_HELD:
            raise _unexpected(session.host, result)
        other, stale = parse_lease(session.host, sections.get("held", "")), None
        if other is None:  # "held" with no lease shown: only a hand-edited host can say that
            raise _unexpected(session.host, result)
        if takeovers and not is_active(other.holder):
            stale, takeovers = other, takeovers - 1
            continue
        if time.monotonic() >= deadline:
            raise _held(session.host, holder, other, wait)
        if not waiting:
            say(f"{session.host}: waiting up to {wait:g} s for the lease held by {other.describe()}")
            waiting = True
        time.sleep(max(min(poll, deadline - time.monotonic()), 0.0))


def _acquire_cmd(layout: ReleaseLayout, holder: Holder, phase: Phase, version: str, target: str,
                 stale: Lease | None) -> str:
    now = now_iso()
    detail = f"took over from {stale.holder} in phase {stale.phase}" if stale else ""
    return acquire_command(layout, AcquireRequest(
        holder.dag_id, holder.run_id, rand_token(8), now, LeaseBody(phase, version, target, now),
        expect=stale.head if stale else None, detail=detail))


def _acquired(session: HostSession, holder: Holder, sections: dict[str, str],
              say: Callable[[str], None], waited: bool) -> Lease:
    event, text = _event(sections)
    lease, previous = parse_lease(session.host, text), parse_lease(session.host, sections.get("previous", ""))
    if lease is None or lease.holder != holder:  # the host said yes but shows something else
        raise LeaseLost(session.host, STEP, f"acquired the lease for {holder} but the host shows "
                        f"{lease.describe() if lease else 'no lease'}; retry")
    if event == "takeover" and previous is not None:
        say(f"{session.host}: took over the stale lease of {previous.describe()}: that run is no longer "
            f"active; the host may be left in phase {previous.phase!r}")
    elif event == "reenter" and previous is not None:
        say(f"{session.host}: {holder} already holds the lease (was in phase {previous.phase})")
    elif waited:
        say(f"{session.host}: lease acquired for {holder} after waiting")
    return replace(lease, previous=previous)


def _held(host: str, holder: Holder, other: Lease, wait: float) -> LeaseHeld:
    return LeaseHeld(
        host, STEP, f"the host is held by {other.describe()}; {holder} waited {wait:g} s. "
        "Only one Tars run changes a host at a time: let that run finish (or stop it) and retry; "
        "a lease whose run is no longer active is taken over automatically",
        holder=str(other.holder), phase=other.phase)


def set_phase(
    session: HostSession, layout: ReleaseLayout, holder: Holder, phase: Phase,
    version: str | None = None, target: str | None = None,
) -> Lease:
    """Record where ``holder``'s work on the host stands; refused unless it holds the lease."""
    command, settle = _phase_call(session.host, layout, holder, phase, version, target)
    return settle(session.run(command, step=STEP, check=False, label=f"lease phase: {phase}"))


def queue_phase(
    session: HostSession, layout: ReleaseLayout, holder: Holder, phase: Phase,
    version: str | None = None,
) -> None:
    """``set_phase`` sent ahead of the session's next command, in its round trip: that command
    runs only once the phase is recorded; a refusal fails its step (``HostSession.queue``)."""
    command, settle = _phase_call(session.host, layout, holder, phase, version, None)
    session.queue(command, step=STEP, label=f"lease phase: {phase}", settle=settle)


def _phase_call(host: str, layout: ReleaseLayout, holder: Holder, phase: Phase, version: str | None,
                target: str | None) -> tuple[str, Callable[[CommandResult], Lease]]:
    """The phase command, and what reads its result (raises unless the phase was recorded)."""
    check_phase(phase)
    if version:
        validate_version(version)
    command = phase_command(layout, holder.dag_id, holder.run_id,
                            LeaseBody(phase, version, target, now_iso()))

    def settle(result: CommandResult) -> Lease:
        sections = _sections(result)
        if result.exit_code == EXIT_NO_LEASE:
            raise LeaseLost(host, STEP, f"{holder} no longer holds the lease (the host has none): "
                            f"not recording phase {phase!r}; stop changing this host and check "
                            "where it stands")
        if result.exit_code == EXIT_NOT_HOLDER:
            raise _not_holder(host, holder, sections, f"record phase {phase!r}")
        lease = parse_lease(host, _event(sections)[1]) if result.exit_code == 0 else None
        if lease is None:
            raise _unexpected(host, result)
        return lease
    return command, settle


def release(session: HostSession, layout: ReleaseLayout, holder: Holder) -> Lease | None:
    """Give the lease back if ``holder`` still has it; the released lease, or None if there was none."""
    result = session.run(release_command(layout, holder.dag_id, holder.run_id, now_iso()),
                         step=STEP, check=False, label=f"release the lease of {holder}")
    sections = _sections(result)
    if result.exit_code == EXIT_NOT_HOLDER:
        raise _not_holder(session.host, holder, sections, "release it")
    if result.exit_code != 0:
        raise _unexpected(session.host, result)
    event, text = _event(sections)
    return parse_lease(session.host, text) if event == "release" else None


def _not_holder(host: str, holder: Holder, sections: dict[str, str], doing: str) -> LeaseHeld:
    other = parse_lease(host, sections.get("held", ""))
    who = other.describe() if other else "another run"
    return LeaseHeld(host, STEP, f"the lease is held by {who}, not by {holder}: refusing to {doing}. "
                     f"{holder} lost the host (its lease was taken over as stale) and must stop changing it",
                     holder=str(other.holder) if other else "", phase=other.phase if other else "")
