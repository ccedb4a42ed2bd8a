"""What `python -m sandbox status` shows, as data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostStatus:
    """One host as seen from outside: served version, HAProxy state, app pid."""

    name: str
    address: str
    group: str
    version: str | None
    haproxy_state: str | None
    app_pid: int | None


@dataclass(frozen=True)
class Status:
    """The whole sandbox."""

    dir: Path
    up: bool
    hosts: list[HostStatus]
    processes: dict[str, int | None]
    frontend_url: str
    artifact_base: str

    def render(self) -> str:
        """Human-readable table."""
        lines = [f"sandbox {self.dir}: {'UP' if self.up else 'DOWN'}",
                 f"  frontend {self.frontend_url}   artifacts {self.artifact_base}"]
        for label, pid in self.processes.items():
            lines.append(f"  {label:<16} {'pid ' + str(pid) if pid else 'not running'}")
        lines.append(f"  {'host':<8} {'address':<12} {'dc':<4} {'version':<14} {'haproxy':<8} app pid")
        for h in self.hosts:
            lines.append(f"  {h.name:<8} {h.address:<12} {h.group:<4} {h.version or '-':<14} "
                         f"{h.haproxy_state or '-':<8} {h.app_pid or '-'}")
        return "\n".join(lines)
