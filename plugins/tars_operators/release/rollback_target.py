"""Where a rollback takes one host, resolved once from what the host says (pure).

A rollback is a target, not a step back: it undoes one release run (the one whose
activation is current), or goes to an explicit version, or repairs a host whose current
release never proved good. A host the undone run did not switch stays where it is, and a
second rollback of the same run moves nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Iterable

from tars_operators.steps.state import HostState, ReleaseMeta, parse_time, previous_good


@dataclass(frozen=True)
class RollbackTarget:
    """The release a host should run after the rollback; ``version`` None: refused (``why``).

    ``undo``: the release being moved away from as a bad one (marked failed once the host
    is back), None when the move is an explicit choice or there is nothing to undo.
    """

    version: str | None
    move: bool
    why: str
    current: str | None = None
    undo: str | None = None

    @property
    def refused(self) -> bool:
        return self.version is None

    def line(self, host: str) -> str:
        """One line for logs and notes."""
        if self.refused:
            return f"{host}: NOT rolled back: {self.why}"
        if self.move:
            return f"{host}: {self.current or 'nothing'} → {self.version} ({self.why})"
        return f"{host}: stays on {self.version} ({self.why})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RollbackTarget:
        return cls(version=data.get("version"), move=bool(data.get("move")), why=str(data.get("why", "")),
                   current=data.get("current"), undo=data.get("undo"))


@dataclass(frozen=True)
class ReleaseRun:
    """A release run as the hosts remember it: its run id and the version it activated."""

    run_id: str
    version: str


def resolve_rollback(state: HostState, *, undo_run: str | None = None, undo_version: str | None = None,
                     explicit: str | None = None) -> RollbackTarget:
    """The release ``state``'s host should run after undoing ``undo_run`` / ``undo_version``.

    - ``explicit``: that version, if the host has it as good or adopted (else refused);
    - current not good/adopted (failed, staged, unknown, foreign, none): what it replaced if
      that is good/adopted, else the most recent good/adopted release other than it;
    - current was switched here by the run being undone: what it replaced (same fallback);
    - otherwise the host stays on its current release (the run did not switch it, or it is
      already back): no move.
    """
    if explicit is not None:
        return _explicit(state, explicit)
    meta = state.current_meta
    if meta is None:
        target = previous_good(state)
        why = f"current is {state.describe_current()}"
        if target is None:
            return RollbackTarget(None, False, f"{why}; no good or adopted release on the host to go back to",
                                  state.current)
        return RollbackTarget(target, True, f"{why}; the most recent good release", state.current)
    if not meta.is_target:
        return _back(state, meta, f"current {meta.version} is {meta.status}")
    undone = undo_version or _activated_by(state, undo_run)
    if undone is not None and meta.version == undone and (undo_run is None or meta.activated_run_id == undo_run):
        return _back(state, meta, f"undoing {meta.version}, switched here by {undo_run or 'the release'}")
    if undo_run is None and undone is None:
        why = f"current {meta.version} is {meta.status}"
    elif meta.version == undone:
        why = f"{meta.version} was not switched here by {undo_run}"
    else:
        why = f"{undo_run or 'the release'} did not leave {undone or 'a release'} current here"
    return RollbackTarget(meta.version, False, why, meta.version)


def _explicit(state: HostState, version: str) -> RollbackTarget:
    meta = state.release(version)
    if meta is None or not meta.is_target:
        had = "is not on this host" if meta is None else f"is {meta.status} on this host"
        return RollbackTarget(None, False, f"{version} {had}; a rollback only goes to a good or adopted "
                              f"release already there (current: {state.describe_current()})", state.current)
    if state.current == version:
        return RollbackTarget(version, False, f"already on {version}", state.current)
    return RollbackTarget(version, True, f"asked for {version}", state.current)


def _back(state: HostState, meta: ReleaseMeta, reason: str) -> RollbackTarget:
    """Away from ``meta`` (current): to what it replaced, else the most recent good release."""
    replaced = state.release(meta.replaced) if meta.replaced else None
    if replaced is not None and replaced.is_target and replaced.version != meta.version:
        return RollbackTarget(replaced.version, True, f"{reason}; back to what it replaced", meta.version,
                              meta.version)
    target = previous_good(state, exclude=meta.version)
    if target is None:
        return RollbackTarget(None, False, f"{reason}; no good or adopted release on the host to go "
                              "back to", meta.version)
    return RollbackTarget(target, True, f"{reason}; back to the most recent good release", meta.version,
                          meta.version)


def _activated_by(state: HostState, run_id: str | None) -> str | None:
    if run_id is None:
        return None
    return next((r.version for r in state.releases if r.activated_run_id == run_id), None)


def latest_release_run(states: Iterable[HostState]) -> ReleaseRun | None:
    """The newest activation by a release run across hosts (restores do not count)."""
    newest: tuple[datetime, ReleaseRun] | None = None
    for state in states:
        for r in state.releases:
            at = parse_time(r.activated_at)
            if r.activated_run_id and r.activated_at and (newest is None or at > newest[0]):
                newest = (at, ReleaseRun(r.activated_run_id, r.version))
    return newest[1] if newest else None
