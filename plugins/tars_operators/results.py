"""Small per-host results that operators return (XCom), for gates, notes and the dashboard."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

StepState = Literal["ok", "unchanged", "skipped", "failed"]


@dataclass(frozen=True)
class StepResult:
    host: str
    step: str  # fetch | stage | pull_out | activate | health | smoke | pull_in | prune | rollback
    state: StepState
    version: str | None = None
    seconds: float = 0.0
    detail: str = ""  # one line a person can read
    data: dict[str, Any] = field(default_factory=dict)  # step specifics (e.g. check output)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
