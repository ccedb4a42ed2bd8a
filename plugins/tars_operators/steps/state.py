"""What a host says about itself: its current release and every release's metadata.

The host is the source of truth for rollback: ``previous_good`` reads it, not Airflow's DB.
``current`` is the release directory the link resolves to (relative, absolute or chained
links alike). A current release without Tars metadata (installed by another tool) is
``adopted``: a rollback target like ``good``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, Mapping

from tars_operators.config.spec import AppSpec, Host
from tars_operators.config.templating import host_context
from tars_operators.errors import InvalidValue, RemoteError
from tars_operators.remote.commands import META_MAX_BYTES, STATE_MARK, state_command
from tars_operators.remote.layout import ReleaseLayout
from tars_operators.remote.validate import validate_version

if TYPE_CHECKING:
    from tars_operators.hooks.ssh import HostSession

ReleaseStatus = Literal["staged", "good", "adopted", "failed", "unknown"]
TARGET_STATUSES = ("good", "adopted")  # what a rollback may return to
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
    """``releases/<version>/.tars/release.json``; status ``unknown`` when it is missing.

    ``derived``: not read from the host but inferred (the current release without metadata
    is ``adopted``); activate writes it down before switching away from it.
    """

    version: str
    sha256: str | None = None
    installed_at: str | None = None
    activated_at: str | None = None
    run_id: str | None = None
    status: ReleaseStatus = "unknown"
    extra: Mapping[str, Any] = field(default_factory=dict)
    derived: bool = False

    @property
    def is_target(self) -> bool:
        """A release a rollback may return to (``good`` or ``adopted``)."""
        return self.status in TARGET_STATUSES

    @property
    def replaced(self) -> str | None:
        """The release that was current when this one was activated (None: nothing was)."""
        value = self.extra.get("replaced")
        return value if isinstance(value, str) else None

    @property
    def activated_run_id(self) -> str | None:
        """The release run that switched ``current`` to this release (restores do not)."""
        value = self.extra.get("activated_run_id")
        return value if isinstance(value, str) else None

    @property
    def last_current_at(self) -> datetime:
        """When this release last became current: activated, restored or adopted."""
        return max(parse_time(self.activated_at), parse_time(self.extra.get("restored_at")),
                   parse_time(self.extra.get("adopted_at")))

    def as_json(self) -> dict[str, Any]:
        return {**self.extra, "version": self.version, "sha256": self.sha256,
                "installed_at": self.installed_at, "activated_at": self.activated_at,
                "run_id": self.run_id, "status": self.status}

    def with_(self, **changes: Any) -> ReleaseMeta:
        return replace(self, **changes)

    @classmethod
    def from_json(cls, version: str, text: str | bytes) -> ReleaseMeta:
        """Strict: a JSON object of at most ``META_MAX_BYTES`` whose known fields have their
        types and whose ``version`` is the directory's; anything else is status ``unknown``."""
        data = _strict_json(text)
        if data is None or data.get("version") != version:
            return cls(version=version)
        if not all(data.get(k) is None or isinstance(data.get(k), str) for k in _STRING_FIELDS):
            return cls(version=version)
        sha = data.get("sha256")
        raw = data.get("status")
        if (sha is not None and not _SHA256.fullmatch(sha)) or raw not in ("staged", "good", "adopted", "failed"):
            return cls(version=version)
        return cls(version=version, sha256=sha, installed_at=data.get("installed_at"),
                   activated_at=data.get("activated_at"), run_id=data.get("run_id"), status=raw,
                   extra={k: v for k, v in data.items() if k not in _FIELDS})


_FIELDS = ("version", "sha256", "installed_at", "activated_at", "run_id", "status")
# Every string field Tars writes (null allowed); another type means the file is not ours.
_STRING_FIELDS = (*_FIELDS, "replaced", "activated_run_id", "restored_by_run", "restored_at",
                  "adopted_at", "adopted_by_run", "marked_at", "app")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _strict_json(text: str | bytes) -> dict[str, Any] | None:
    """A JSON object (UTF-8, no NaN/Infinity, not too deep, not too long), else None."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > META_MAX_BYTES:
        return None

    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class HostState:
    """``current`` (a version, or None) and the releases on the host, sorted by version dir.

    ``current_path`` is where the link resolves (None: no link, or it leads nowhere); ``link``
    its raw text. A ``current`` outside ``releases/`` is foreign: ``current`` is None.
    """

    current: str | None
    releases: list[ReleaseMeta]
    deploy_root_exists: bool = True
    current_path: str | None = None
    link: str | None = None

    def release(self, version: str) -> ReleaseMeta | None:
        return next((r for r in self.releases if r.version == version), None)

    @property
    def current_meta(self) -> ReleaseMeta | None:
        return self.release(self.current) if self.current else None

    @property
    def foreign_current(self) -> str | None:
        """Where ``current`` leads when it is not a release of ours (for messages)."""
        if self.current is not None:
            return None
        return self.current_path or self.link or None

    def describe_current(self) -> str:
        if self.current is not None:
            meta = self.current_meta
            return f"{self.current} ({meta.status})" if meta else self.current
        if self.foreign_current:
            return f"nothing of ours (current → {self.foreign_current}, outside releases/)"
        return "nothing (no current link)"


def parse_state(output: str) -> HostState:
    """Parse the output of ``remote.commands.state_command``.

    Only ``@@<token> <key> <hex>`` lines count, signed with the token the first marker line
    announced, and the output must end with the ``end`` line: no release.json content can
    add a release or change ``current``. A garbled line of ours is an error, a garbled
    release.json is status ``unknown``.
    """
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(STATE_MARK)), None)
    if start is None:
        raise InvalidValue("the host's state output has no Tars marker line: " + output[:200])
    mark = f"@@{lines[start][len(STATE_MARK):].strip()} "
    fields: dict[str, str] = {}
    metas: dict[str, bytes | None] = {}
    name: str | None = None
    ended = False
    for line in lines[start + 1:]:
        if not line.startswith(mark):
            continue
        key, _, value = line[len(mark):].partition(" ")
        if key == "absent":
            return HostState(current=None, releases=[], deploy_root_exists=False)
        if key == "end":
            ended = True
            break
        if key == "meta":
            if name is not None and metas.get(name) is None:
                metas[name] = _unhex(value, limit=2 * (META_MAX_BYTES + 1)) or b"\0"
            name = None
            continue
        text = _unhex(value, limit=8192)
        if text is None:
            raise InvalidValue(f"the host's state output has a garbled {key!r} line: {line[:200]!r}")
        value = text.decode("utf-8", "replace")
        if key == "release":
            name = value if value not in metas else None  # a name twice: keep the first
            if name is not None:
                metas[name] = None
        elif key in ("releases", "current", "link"):
            fields[key], name = value, None
    if not ended:
        raise InvalidValue("the host's state output is incomplete (no end marker): " + output[-200:])
    releases = [ReleaseMeta.from_json(n, body) if body is not None else ReleaseMeta(version=n)
                for n, body in sorted(metas.items()) if _is_version(n)]
    path = fields.get("current") or None
    current = _release_under(path, fields.get("releases") or None)
    releases = [_adopt(r) if r.version == current and r.status == "unknown" else r for r in releases]
    return HostState(current=current, releases=releases, current_path=path,
                     link=fields.get("link") or None)


def _unhex(value: str, *, limit: int) -> bytes | None:
    """Lower-case hex as ``od | tr`` prints it, else None."""
    if len(value) > limit or len(value) % 2 or not _HEX.fullmatch(value):
        return None
    return bytes.fromhex(value)


_HEX = re.compile(r"[0-9a-f]*")


def _release_under(path: str | None, releases_dir: str | None) -> str | None:
    """``<releases>/<version>`` → version; anything else (foreign, nested) → None."""
    if not path or not releases_dir or not path.startswith(releases_dir.rstrip("/") + "/"):
        return None
    name = path[len(releases_dir.rstrip("/")) + 1:]
    return name if "/" not in name and _is_version(name) else None


def _adopt(meta: ReleaseMeta) -> ReleaseMeta:
    return meta.with_(status="adopted", derived=True)


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
    try:
        return parse_state(result.stdout)
    except InvalidValue as exc:
        raise RemoteError(session.host, step, str(exc)) from None


def good_releases(state: HostState) -> list[ReleaseMeta]:
    """Rollback targets (good or adopted), the one most recently current first."""
    good = [r for r in state.releases if r.is_target]
    return sorted(good, key=lambda r: r.last_current_at, reverse=True)


def previous_good(state: HostState, exclude: str | None = None) -> str | None:
    """The good (or adopted) release most recently current, other than ``exclude``."""
    return next((r.version for r in good_releases(state) if r.version != exclude), None)


def select_prunable(state: HostState, keep: int) -> list[str]:
    """Releases to remove: failed ones, good ones beyond the ``keep`` most recent, and staged
    ones installed before the newest good activation. Never ``current``; unknown dirs stay."""
    good = good_releases(state)
    doomed = {r.version for r in good[keep:]}
    doomed |= {r.version for r in state.releases if r.status == "failed"}
    if good:
        newest = good[0].last_current_at
        doomed |= {r.version for r in state.releases
                   if r.status == "staged" and parse_time(r.installed_at) < newest}
    doomed.discard(state.current or "")
    return sorted(doomed)
