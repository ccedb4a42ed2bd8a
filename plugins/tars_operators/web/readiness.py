"""The App view's Ready column: each host's ``runtime.requires`` readiness where it is known.

Two runs record it: a release's ``prepare`` (its preflight, XCom ``readiness``) and the last
"Refresh from hosts" (each host's report carries ``readiness``). Per host the newer of the two
that checked it wins, and the cell says which run and when. Pure: no I/O, no Airflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tars_operators.assembly.preflight import READINESS
from tars_operators.web.onhost import InspectRecord

__all__ = ["READINESS", "ReadinessSource", "ReadyCell", "from_prepare", "from_refresh",
           "ready_cells"]


@dataclass(frozen=True)
class ReadinessSource:
    """One run's readiness of the hosts it checked (host → ``preflight.readiness_entry``)."""

    kind: str  # "release" (a prepare's preflight) or "refresh"
    dag_id: str
    run_id: str
    at: str  # ISO time the hosts were checked
    hosts: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class ReadyCell:
    """What the Ready column shows of one host (``ready`` = "": the host requires nothing)."""

    ready: str  # ready / missing / unknown / ""
    ready_text: str  # "ready", "missing: python3 >= 3.11 (found 3.9 (…))", "unknown"
    ready_kind: str  # the run it is as of: release / refresh / "" (never checked)
    ready_dag_id: str
    ready_run_id: str
    ready_at: str


def from_prepare(dag_id: str, run_id: str, value: Any) -> ReadinessSource | None:
    """``prepare``'s XCom ``readiness`` (``preflight.readiness_record``); None if malformed."""
    if not isinstance(value, dict) or not isinstance(value.get("hosts"), dict):
        return None
    hosts = {str(k): v for k, v in value["hosts"].items() if isinstance(v, dict)}
    return ReadinessSource("release", dag_id, run_id, str(value.get("checked_at") or ""), hosts)


def from_refresh(inspect: InspectRecord | None) -> ReadinessSource | None:
    """The readiness in the last refresh's host reports (None: no refresh has read yet)."""
    if inspect is None or inspect.read is None:
        return None
    hosts = {name: r["readiness"] for name, r in inspect.hosts().items()
             if isinstance(r.get("readiness"), dict)}
    return ReadinessSource("refresh", inspect.dag_id, inspect.read_run_id, inspect.read_at, hosts)


def _stamp(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else float("-inf")
    except ValueError:
        return float("-inf")


def _text(entry: Mapping[str, Any]) -> tuple[str, str]:
    if entry.get("error"):
        return "unknown", f"unknown (not checked: {entry['error']})"
    if entry.get("ready") is True:
        return "ready", "ready"
    missing = [str(m) for m in entry.get("missing") or []]
    return "missing", "missing: " + ("; ".join(missing) or "a requirement")


def ready_cells(hosts: Sequence[tuple[str, bool]],
                sources: Sequence[ReadinessSource | None]) -> list[ReadyCell]:
    """One cell per ``(host, has requirements)``, from the newest source that checked it."""
    known = sorted((s for s in sources if s is not None), key=lambda s: _stamp(s.at),
                   reverse=True)
    cells = []
    for name, required in hosts:
        if not required:
            cells.append(ReadyCell("", "nothing required", "", "", "", ""))
            continue
        src = next((s for s in known if name in s.hosts), None)
        if src is None:
            cells.append(ReadyCell("unknown", "unknown", "", "", "", ""))
            continue
        state, text = _text(src.hosts[name])
        cells.append(ReadyCell(state, text, src.kind, src.dag_id, src.run_id, src.at))
    return cells
