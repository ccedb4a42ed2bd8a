"""What the hosts themselves said, beside what Tars recorded: the App view's on-host columns.

Pure: the last ``tars_inspect__<app>`` run's result (read by ``web.records``), the live
load-balancer states (``web.livelb``, when the LB's API is reachable from the api-server) and
the hosts' datacenter/group come in; one ``OnHostRow`` per host goes out. No I/O, no Airflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

RUNNING = ("queued", "running")


@dataclass(frozen=True)
class InspectRecord:
    """The newest run of ``tars_inspect__<app>`` and the result of the newest one that read."""

    dag_id: str
    run_id: str
    state: str | None
    start: datetime | None
    end: datetime | None
    read_run_id: str = ""  # the run whose result ``read`` is ("" when none has read yet)
    read: dict[str, Any] | None = None  # {"read_at": iso, "hosts": [host_report, …]}

    @property
    def running(self) -> bool:
        return self.state in RUNNING

    @property
    def read_at(self) -> str:
        return str((self.read or {}).get("read_at") or "")

    def hosts(self) -> dict[str, dict[str, Any]]:
        return {str(h.get("host")): h for h in (self.read or {}).get("hosts") or []
                if isinstance(h, dict)}

    def summary(self) -> dict[str, Any]:
        """The page's "Refresh from hosts" line: the newest run and when the hosts were read."""
        return {"dag_id": self.dag_id, "run_id": self.run_id, "state": self.state or "",
                "running": self.running, "read_at": self.read_at,
                "read_run_id": self.read_run_id}


@dataclass(frozen=True)
class LiveLB:
    """LB states read just now by the api-server (host → the LB's words), or why not."""

    states: Mapping[str, str] | None
    why: str  # what the page says about the LB column ("live from …" or why not live)


@dataclass(frozen=True)
class OnHostRow:
    host: str
    datacenter: str  # "dc1", or "dc1 / group" when the host var ``datacenter`` differs
    on_host: str | None  # the version ``current`` resolves to, as last read (None: not read)
    on_host_status: str  # good / adopted / staged / failed / unknown, or ""
    differs: bool  # read after Tars last recorded the host, and not what Tars recorded
    releases: tuple[str, ...]  # other releases on disk: "2.1.0 (staged)"
    lb: str  # the LB's words: "UP (admin ready, 0 sessions, check L7OK)"
    lb_status: str  # UP / DOWN / DRAIN / MAINT / unreadable / "" (nothing known)
    lb_source: str  # "live", "refresh" (as of ``read_at``) or "" (nothing known)
    read_at: str
    read_error: str  # why the host could not be read at the last refresh
    phase: str  # a run's lease on the host when it was read ("" when free)


def datacenter(group: str, host_vars: Mapping[str, Any]) -> str:
    """The host's ``datacenter`` var and its group, once each."""
    dc = str(host_vars.get("datacenter") or "")
    parts = [p for p in (dc, group) if p]
    return " / ".join(dict.fromkeys(parts))


def lb_status(words: str) -> str:
    """The status word of an LB description (``ServerState.describe`` starts with it)."""
    if not words:
        return ""
    if words.startswith("state unknown"):
        return "unknown"
    first = words.split()[0]
    return first if first.isupper() else first.rstrip(":")


def _time(iso: str) -> datetime | None:
    try:
        return datetime.fromisoformat(iso) if iso else None
    except ValueError:
        return None


def on_host_rows(hosts: list[tuple[str, str, Mapping[str, Any]]],
                 recorded: Mapping[str, tuple[str | None, str]], inspect: InspectRecord | None,
                 live: LiveLB | None) -> list[OnHostRow]:
    """One row per ``(host, group, vars)``.

    ``recorded``: host → (version Tars recorded, when as ISO) from the host rows. A host
    ``differs`` only when it was read after Tars last recorded it: a refresh older than the
    last release says nothing about what the release left.
    """
    read = inspect.hosts() if inspect else {}
    read_at = inspect.read_at if inspect else ""
    live_states = live.states if live is not None else None
    rows = []
    for name, group, host_vars in hosts:
        report = read.get(name) or {}
        version = report.get("version")
        error = str(report.get("error") or "")
        on_host = str(version) if version and not error else None
        want, at = recorded.get(name, (None, ""))
        read_time, at_time = _time(read_at), _time(at)
        fresh = read_time is not None and (at_time is None or read_time >= at_time)
        differs = bool(report) and not error and fresh and want is not None and on_host != want
        if live_states is not None and name in live_states:
            lb, source = live_states[name], "live"
        else:
            lb, source = str(report.get("lb") or ""), "refresh" if report.get("lb") else ""
        releases = tuple(f"{r.get('version')} ({r.get('status')})"
                         for r in report.get("releases") or [] if isinstance(r, dict))
        rows.append(OnHostRow(
            host=name, datacenter=datacenter(group, host_vars), on_host=on_host,
            on_host_status=str(report.get("status") or "") if on_host else "",
            differs=differs, releases=releases, lb=lb, lb_status=lb_status(lb),
            lb_source=source, read_at=read_at if report else "", read_error=error,
            phase=str(report.get("phase") or "")))
    return rows
