"""The manual brake of an app: an Airflow Variable read by every host step and gate.

Pulling it (``hold``) stops the release before the next host is touched; it resumes when
the brake is released. ``rollback`` asks the release to roll back at its next gate. Every
pull and release is appended to an audit trail (``tars_audit__<app>``) and logged.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any, Callable

from tars_operators.release.machine import Brake

AUDIT_KEEP = 200


def brake_key(app: str) -> str:
    return f"tars_brake__{app}"


def audit_key(app: str) -> str:
    return f"tars_audit__{app}"


def parse_brake(raw: str | None) -> Brake | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return Brake(by="unknown", reason=str(raw), at="")
    if not data:
        return None
    return Brake(
        by=str(data.get("by", "unknown")), reason=str(data.get("reason", "")),
        at=str(data.get("at", "")), action=str(data.get("action", "hold")),
    )


def read_brake(app: str, get: Callable[..., Any] | None = None) -> Brake | None:
    """The current brake of ``app`` (None when released). ``get`` defaults to Variable.get."""
    if get is None:
        from airflow.sdk import Variable

        get = Variable.get
    return parse_brake(get(brake_key(app), default=None))


def brake_value(by: str, reason: str, action: str = "hold") -> str:
    if action not in ("hold", "rollback"):
        raise ValueError(f"brake action must be hold or rollback, got {action!r}")
    if not reason.strip():
        raise ValueError("a brake needs a reason")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return json.dumps(asdict(Brake(by=by, reason=reason, at=now, action=action)))


def audit_entry(event: str, by: str, reason: str = "", **extra: Any) -> dict[str, Any]:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {"at": now, "event": event, "by": by, "reason": reason, **extra}


def append_audit(raw: str | None, entry: dict[str, Any]) -> str:
    """The audit trail (a JSON list, newest last) with ``entry`` appended, capped."""
    try:
        trail = json.loads(raw) if raw else []
    except ValueError:
        trail = []
    trail.append(entry)
    return json.dumps(trail[-AUDIT_KEEP:])
