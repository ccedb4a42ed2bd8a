"""Shell commands for the per-host lease: one writer (one Airflow run) per host at a time.

The lease is ``<deploy_root>/.tars/lease``, six ``key<TAB>value`` lines in a fixed order::

    holder   <dag_id> <run_id>      who holds it (compared by the host, line 1)
    acquired <token> <time>         one token per acquisition (the take-over's compare, line 2)
    phase    <phase>                where the holder's work on the host stands
    version  <version>              the version the holder is putting on the host
    target   <text>                 what the holder aims at, free text
    updated  <time>                 the last change

Every change runs under ``flock`` on ``.tars/lease.lock`` (the kernel drops it if the command
dies), reads the lease, decides and writes it with tmp + rename, and appends one line to
``.tars/lease.log`` — so each operation is one compare-and-swap and one SSH round trip.
Values are validated (no control characters) and ``shlex.quote``d; the host only compares them.
Exit codes: 80 held by another holder, 81 not the holder, 82 no lease, 83 lock busy, 84 no flock.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal, Sequence

from tars_operators.errors import InvalidValue
from tars_operators.remote.layout import META_DIR, ReleaseLayout

q = shlex.quote
EXIT_HELD, EXIT_NOT_HOLDER, EXIT_NO_LEASE, EXIT_LOCK_BUSY, EXIT_NO_FLOCK = 80, 81, 82, 83, 84
EVENT_MARK, HELD_MARK, PREVIOUS_MARK = "@@event ", "@@held", "@@previous"
LEASE_FILE, LOG_FILE, LOCK_FILE = "lease", "lease.log", "lease.lock"
LOG_KEEP, LOG_TRIM_AT = 1000, 1200  # the log keeps its last LOG_KEEP lines once past LOG_TRIM_AT
LOCK_WAIT = 10  # seconds to get the flock; it is held for a few milliseconds per operation
KEYS = ("holder", "acquired", "phase", "version", "target", "updated")

Phase = Literal["staging", "out of rotation", "activating", "checking", "in rotation", "restoring", "done"]
PHASES: tuple[Phase, ...] = ("staging", "out of rotation", "activating", "checking", "in rotation",
                             "restoring", "done")
Event = Literal["acquire", "reenter", "takeover", "phase", "release"]


def lease_dir(layout: ReleaseLayout) -> str:
    """``<deploy_root>/.tars``: Tars' own files at the app level (not inside a release)."""
    return f"{layout.deploy_root}/{META_DIR}"


def lease_path(layout: ReleaseLayout) -> str:
    return f"{lease_dir(layout)}/{LEASE_FILE}"


def log_path(layout: ReleaseLayout) -> str:
    return f"{lease_dir(layout)}/{LOG_FILE}"


def clean_text(value: object, what: str, *, limit: int = 200, empty: bool = True) -> str:
    """A value stored in the lease: a string without control characters (tabs, newlines)."""
    if not isinstance(value, str):
        raise InvalidValue(f"lease {what} must be a string, got {type(value).__name__}")
    if len(value) > limit or any(ord(c) < 32 or ord(c) == 127 for c in value) or (not empty and not value):
        raise InvalidValue(f"lease {what} {value[:80]!r} is not allowed: 1-{limit} characters, "
                           "no tabs, newlines or other control characters")
    return value


def one_line(value: str) -> str:
    """A line read back from the host (tabs allowed), sent back for an exact comparison."""
    if any(c in value for c in "\n\r\0"):
        raise InvalidValue(f"lease line {value[:80]!r} must be one line")
    return value


def check_phase(phase: object) -> Phase:
    if phase not in PHASES:
        raise InvalidValue(f"lease phase {str(phase)[:40]!r} is not one of {', '.join(PHASES)}")
    return phase


@dataclass(frozen=True)
class LeaseBody:
    """Lines 3-6 of the lease; ``None`` for version or target keeps the host's current value."""

    phase: Phase
    version: str | None
    target: str | None
    updated: str

    def shell_lines(self) -> list[str]:
        def line(key: str, value: str | None, old: str) -> str:
            return q(f"{key}\t{clean_text(value, key)}") if value is not None else f'"{old}"'
        return [q(f"phase\t{check_phase(self.phase)}"), line("version", self.version, "$l4"),
                line("target", self.target, "$l5"), q(f"updated\t{clean_text(self.updated, 'time')}")]


def holder_line(dag_id: str, run_id: str) -> str:
    return f"holder\t{clean_text(dag_id, 'dag_id', empty=False)}\t{clean_text(run_id, 'run_id', empty=False)}"


def acquired_line(token: str, since: str) -> str:
    return f"acquired\t{clean_text(token, 'token', empty=False)}\t{clean_text(since, 'time')}"


def _locked(layout: ReleaseLayout, *, create: bool, absent: str) -> list[str]:
    """Enter ``.tars`` (creating it, or running ``absent`` when missing), take the flock, read lines 1-5."""
    where = q(lease_dir(layout))
    enter = f"mkdir -p {where} && cd {where}" if create else f"cd {where} 2>/dev/null || {{ {absent}; }}"
    return [
        "set -e", "umask 022", enter,
        f"command -v flock >/dev/null 2>&1 || {{ echo 'tars: the lease needs flock (util-linux) on the host' >&2; exit {EXIT_NO_FLOCK}; }}",
        f"exec 9>>{LOCK_FILE}",
        f"flock -w {LOCK_WAIT} 9 || {{ echo 'tars: the lease lock stayed busy for {LOCK_WAIT}s' >&2; exit {EXIT_LOCK_BUSY}; }}",
        "l1= l2= l3= l4= l5=",
        f"if [ -f {LEASE_FILE} ]; then {{ IFS= read -r l1 && IFS= read -r l2 && IFS= read -r l3 && "
        f"IFS= read -r l4 && IFS= read -r l5; }} < {LEASE_FILE} || :; fi",
    ]


def _held(code: int) -> str:
    return f"{{ echo {HELD_MARK}; cat {LEASE_FILE}; exit {code}; }}"


def _write(head: Sequence[str], body: LeaseBody) -> list[str]:
    """Write the lease atomically; ``head`` are shell words (quoted literals or "$l1"-style)."""
    return [f"printf '%s\\n' {' '.join(head)} {' '.join(body.shell_lines())} > {LEASE_FILE}.tmp-$$",
            f"mv -f {LEASE_FILE}.tmp-$$ {LEASE_FILE}"]


def _log(time: str, event: str, dag_id: str, run_id: str, phase: str, version: str, detail: str) -> list[str]:
    """Append one tab-separated line (time event dag run phase version detail), trimming the log."""
    fields = " ".join([q(clean_text(time, "time")), event, q(dag_id), q(run_id), phase, version, detail])
    return [
        f"printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' {fields} >> {LOG_FILE}",
        f'if [ "$(wc -l < {LOG_FILE})" -gt {LOG_TRIM_AT} ]; then '
        f"tail -n {LOG_KEEP} {LOG_FILE} > {LOG_FILE}.tmp-$$ && mv -f {LOG_FILE}.tmp-$$ {LOG_FILE}; fi",
    ]


def _done(event: str) -> list[str]:
    """Say what happened (``event`` is a shell word) and print the lease as written."""
    return [f"echo {q(EVENT_MARK)}{event}", f"cat {LEASE_FILE}"]


@dataclass(frozen=True)
class AcquireRequest:
    """Everything ``acquire_command`` needs; ``expect``: lines 1-2 of a stale lease to take over."""

    dag_id: str
    run_id: str
    token: str
    now: str
    body: LeaseBody
    expect: tuple[str, str] | None = None
    detail: str = ""  # the log's note on a take-over (whose lease, in which phase)


def acquire_command(layout: ReleaseLayout, req: AcquireRequest) -> str:
    """Take the lease if free, keep it if ours (same token and since), or take over ``expect``.

    Prints ``@@previous`` and the lease found (if any), then ``@@event acquire|reenter|takeover``
    and the lease written; if another holder has it, prints ``@@held`` and that lease, exits 80.
    """
    holder, fresh = holder_line(req.dag_id, req.run_id), acquired_line(req.token, req.now)
    body = req.body
    if body.version is None or body.target is None:
        raise InvalidValue("acquiring a lease needs a version and a target ('' when unknown)")
    lines = _locked(layout, create=True, absent=":")
    lines += [f"H={q(holder)} A={q(fresh)}",
              'if [ -z "$l1" ]; then ev=acquire', 'elif [ "$l1" = "$H" ]; then ev=reenter; A="$l2"']
    if req.expect:  # the stale lease the caller saw, compared with its token: one taker wins
        held, acquired = (q(one_line(line)) for line in req.expect)
        lines.append(f'elif [ "$l1" = {held} ] && [ "$l2" = {acquired} ]; then ev=takeover')
    lines.append(f"else {_held(EXIT_HELD)}; fi")
    lines.append(f'if [ -n "$l1" ]; then echo {PREVIOUS_MARK}; cat {LEASE_FILE}; fi')
    lines += _write(['"$H"', '"$A"'], body)
    detail = q(clean_text(req.detail, "detail", limit=400))
    lines += _log(req.now, '"$ev"', req.dag_id, req.run_id, q(body.phase), q(body.version), detail)
    return "\n".join(lines + _done('"$ev"'))


def phase_command(layout: ReleaseLayout, dag_id: str, run_id: str, body: LeaseBody) -> str:
    """Rewrite the phase (and version/target if given) if the lease is still the holder's."""
    none = f"echo {q(EVENT_MARK)}none; exit {EXIT_NO_LEASE}"
    lines = _locked(layout, create=False, absent=none)
    lines += [f"H={q(holder_line(dag_id, run_id))}",
              f'[ -n "$l1" ] || {{ {none}; }}', f'[ "$l1" = "$H" ] || {_held(EXIT_NOT_HOLDER)}']
    lines += _write(['"$l1"', '"$l2"'], body)
    version = q(body.version) if body.version is not None else '"${l4#version?}"'
    lines += _log(body.updated, "phase", dag_id, run_id, q(body.phase), version, "''")
    return "\n".join(lines + _done("phase"))


def release_command(layout: ReleaseLayout, dag_id: str, run_id: str, now: str) -> str:
    """Remove the lease if it is the holder's; nothing to do (exit 0) if there is none."""
    none = f"echo {q(EVENT_MARK)}none; exit 0"
    lines = _locked(layout, create=False, absent=none)
    lines += [f"H={q(holder_line(dag_id, run_id))}",
              f'[ -n "$l1" ] || {{ {none}; }}', f'[ "$l1" = "$H" ] || {_held(EXIT_NOT_HOLDER)}',
              *_done("release"), f"rm -f {LEASE_FILE}"]
    lines += _log(now, "release", dag_id, run_id, '"${l3#phase?}"', '"${l4#version?}"', "''")
    return "\n".join(lines)


def read_command(layout: ReleaseLayout, *, log_lines: int = 0) -> str:
    """Print the lease (no lock: it is only ever replaced by rename), and the log's last lines."""
    lines = [f"cat {q(lease_path(layout))} 2>/dev/null || :"]
    if log_lines:
        lines += [f"echo {q(EVENT_MARK + 'log')}", f"tail -n {int(log_lines)} {q(log_path(layout))} 2>/dev/null || :"]
    return "\n".join(lines)
