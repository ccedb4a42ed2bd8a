"""What a host says about itself: its current release and every release's metadata.

The host is the source of truth for rollback: ``previous_good`` reads it, not Airflow's DB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, Mapping

from tars_operators.config.spec import AppSpec, Host
from tars_operators.config.templating import host_context
from tars_operators.errors import InvalidValue
from tars_operators.remote.commands import ABSENT_MARK, CURRENT_MARK, RELEASE_MARK, state_command
from tars_operators.remote.layout import ReleaseLayout
from tars_operators.remote.validate import validate_version

if TYPE_CHECKING:
    from tars_operators.hooks.ssh import HostSession

ReleaseStatus = Literal["staged", "good", "failed", "unknown"]
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def now_iso() -> str:
    """UTC timestamp as stored in release.json (ms resolution: activations can be close)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str | None) -> datetime:
    if not value:
        return _EPOCH
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return _EPOCH
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class ReleaseMeta:
    """``releases/<version>/.tars/release.json``; status ``unknown`` when it is missing."""

    version: str
    sha256: str | None = None
    installed_at: str | None = None
    activated_at: str | None = None
    run_id: str | None = None
    status: ReleaseStatus = "unknown"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {**self.extra, "version": self.version, "sha256": self.sha256,
                "installed_at": self.installed_at, "activated_at": self.activated_at,
                "run_id": self.run_id, "status": self.status}

    def with_(self, **changes: Any) -> ReleaseMeta:
        return replace(self, **changes)

    @classmethod
    def from_json(cls, version: str, text: str) -> ReleaseMeta:
        try:
            data = json.loads(text) if text.strip() else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return cls(version=version)
        known = {"version", "sha256", "installed_at", "activated_at", "run_id", "status"}
        raw = data.get("status")
        status: Literal["staged", "good", "failed", "unknown"] = (
            raw if raw in ("staged", "good", "failed") else "unknown")
        return cls(version=version, sha256=data.get("sha256"), installed_at=data.get("installed_at"),
                   activated_at=data.get("activated_at"), run_id=data.get("run_id"), status=status,
                   extra={k: v for k, v in data.items() if k not in known})


@dataclass(frozen=True)
class HostState:
    """``current`` (a version, or None) and the releases on the host, sorted by version dir."""

    current: str | None
    releases: list[ReleaseMeta]
    deploy_root_exists: bool = True

    def release(self, version: str) -> ReleaseMeta | None:
        return next((r for r in self.releases if r.version == version), None)


def parse_state(output: str) -> HostState:
    """Parse the output of ``remote.commands.state_command``."""
    if output.strip() == ABSENT_MARK:
        return HostState(current=None, releases=[], deploy_root_exists=False)
    current: str | None = None
    chunks: dict[str, list[str]] = {}
    name: str | None = None
    for line in output.splitlines():
        if line.startswith(CURRENT_MARK):
            target = line[len(CURRENT_MARK):].strip().rstrip("/")
            current = target.rsplit("/", 1)[-1] if target.startswith("releases/") else None
        elif line.startswith(RELEASE_MARK):
            name = line[len(RELEASE_MARK):]
            chunks[name] = []
        elif name is not None:
            chunks[name].append(line)
    releases = [ReleaseMeta.from_json(n, "\n".join(body)) for n, body in sorted(chunks.items())
                if _is_version(n)]
    return HostState(current=current if current and _is_version(current) else None, releases=releases)


def _is_version(name: str) -> bool:
    try:
        validate_version(name)
    except InvalidValue:
        return False
    return True


def layout_for(spec: AppSpec, host: Host) -> ReleaseLayout:
    return ReleaseLayout(host_context(spec, host, None)["deploy_root"])


def read_host_state(
    session: HostSession, ctx: Mapping[str, Any] | ReleaseLayout, *, step: str = "state",
    cleanup: bool = False,
) -> HostState:
    """Ask the host (one command). ``ctx`` is a ``host_context`` dict or a ReleaseLayout."""
    layout = ctx if isinstance(ctx, ReleaseLayout) else ReleaseLayout(ctx["deploy_root"])
    result = session.run(state_command(layout, cleanup=cleanup), step=step, label="read host state")
    return parse_state(result.stdout)


def good_releases(state: HostState) -> list[ReleaseMeta]:
    """Good releases, most recently activated first."""
    good = [r for r in state.releases if r.status == "good"]
    return sorted(good, key=lambda r: parse_time(r.activated_at), reverse=True)


def previous_good(state: HostState, exclude: str | None = None) -> str | None:
    """The good release with the latest ``activated_at`` other than ``exclude``."""
    return next((r.version for r in good_releases(state) if r.version != exclude), None)


def select_prunable(state: HostState, keep: int) -> list[str]:
    """Releases to remove: failed ones, good ones beyond the ``keep`` most recent, and staged
    ones installed before the newest good activation. Never ``current``; unknown dirs stay."""
    good = good_releases(state)
    doomed = {r.version for r in good[keep:]}
    doomed |= {r.version for r in state.releases if r.status == "failed"}
    if good:
        newest = parse_time(good[0].activated_at)
        doomed |= {r.version for r in state.releases
                   if r.status == "staged" and parse_time(r.installed_at) < newest}
    doomed.discard(state.current or "")
    return sorted(doomed)
