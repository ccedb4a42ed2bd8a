"""The release state machine, explicit and pure; the DAG's structure is derived from it.

Release: planned → [waiting for window] → stage(fort) → gate → [bake] → [awaiting approval]
→ stage(batch_1) → gate → … → succeeded; from a gate: braked (paused until released),
rolling back → rolled back, or halted. Host: pending → staged → out of rotation → active →
healthy → in rotation, or failed@<step> → restored after rollback (or untouched when a brake
stopped the release before the host was reached).

``docs/release-state-machine.md`` draws both machines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Release(str, Enum):
    PLANNED = "planned"
    WAITING_WINDOW = "waiting for window"
    RUNNING_STAGE = "running stage"
    AT_GATE = "at gate"
    BAKING = "baking"
    AWAITING_APPROVAL = "awaiting approval"
    BRAKED = "braked"
    ROLLING_BACK = "rolling back"
    ROLLED_BACK = "rolled back"
    HALTED = "halted"
    SUCCEEDED = "succeeded"
    REJECTED = "rejected"  # refused before any host was touched (bad params, window, freeze)


RELEASE_TRANSITIONS: dict[Release, frozenset[Release]] = {
    Release.PLANNED: frozenset({Release.WAITING_WINDOW, Release.RUNNING_STAGE, Release.REJECTED}),
    Release.WAITING_WINDOW: frozenset({Release.RUNNING_STAGE, Release.REJECTED}),
    Release.RUNNING_STAGE: frozenset({Release.AT_GATE}),
    Release.AT_GATE: frozenset({
        Release.RUNNING_STAGE, Release.BAKING, Release.AWAITING_APPROVAL, Release.BRAKED,
        Release.ROLLING_BACK, Release.HALTED, Release.SUCCEEDED,
    }),
    Release.BAKING: frozenset({Release.AWAITING_APPROVAL, Release.RUNNING_STAGE}),
    Release.AWAITING_APPROVAL: frozenset({
        Release.RUNNING_STAGE, Release.ROLLING_BACK, Release.HALTED,
    }),
    Release.BRAKED: frozenset({Release.AT_GATE, Release.ROLLING_BACK}),
    Release.ROLLING_BACK: frozenset({Release.ROLLED_BACK}),
    Release.ROLLED_BACK: frozenset(),
    Release.HALTED: frozenset(),
    Release.SUCCEEDED: frozenset(),
    Release.REJECTED: frozenset(),
}


class HostPhase(str, Enum):
    PENDING = "pending"
    STAGED = "staged"
    OUT_OF_ROTATION = "out of rotation"
    ACTIVE = "active"
    HEALTHY = "healthy"
    IN_ROTATION = "in rotation"
    FAILED = "failed"
    RESTORED = "restored"
    UNTOUCHED = "untouched"


HOST_TRANSITIONS: dict[HostPhase, frozenset[HostPhase]] = {
    HostPhase.PENDING: frozenset({HostPhase.STAGED, HostPhase.FAILED, HostPhase.UNTOUCHED}),
    HostPhase.STAGED: frozenset({HostPhase.OUT_OF_ROTATION, HostPhase.FAILED}),
    HostPhase.OUT_OF_ROTATION: frozenset({HostPhase.ACTIVE, HostPhase.FAILED}),
    HostPhase.ACTIVE: frozenset({HostPhase.HEALTHY, HostPhase.FAILED}),
    HostPhase.HEALTHY: frozenset({HostPhase.IN_ROTATION, HostPhase.FAILED}),
    HostPhase.IN_ROTATION: frozenset({HostPhase.RESTORED}),  # a later gate rolled back
    HostPhase.FAILED: frozenset({HostPhase.RESTORED, HostPhase.FAILED}),
    HostPhase.RESTORED: frozenset(),
    HostPhase.UNTOUCHED: frozenset(),
}

# The order of the per-host chain; a host failing at one of these is ``failed@<step>``.
HOST_STEPS = ("stage", "pull_out", "activate", "health", "smoke", "pull_in")
HOST_PHASE_AFTER_STEP = {
    "stage": HostPhase.STAGED,
    "pull_out": HostPhase.OUT_OF_ROTATION,
    "activate": HostPhase.ACTIVE,
    "health": HostPhase.HEALTHY,
    "smoke": HostPhase.HEALTHY,
    "pull_in": HostPhase.IN_ROTATION,
}


def check_transition(table: Mapping[Any, frozenset[Any]], current: Enum, new: Enum) -> None:
    """Raise ValueError on a transition the machine does not allow (bugs, not user errors)."""
    if new not in table[current]:
        raise ValueError(f"illegal transition {current.value} → {new.value}")


class Decision(str, Enum):
    CONTINUE = "continue"  # next stage (through bake / approval when configured)
    FINISH = "finish"  # last stage done: the release succeeded
    WAIT = "wait"  # brake pulled: hold here until released (or a rollback is asked)
    ROLLBACK = "rollback"
    HALT = "halt"


@dataclass(frozen=True)
class Brake:
    """A pulled brake (``action`` rollback asks every waiting step to roll back instead)."""

    by: str
    reason: str
    at: str
    action: str = "hold"  # hold | rollback


@dataclass(frozen=True)
class StageOutcome:
    stage: str
    hosts: tuple[str, ...]
    succeeded: tuple[str, ...]
    failed: tuple[str, ...]
    untouched: tuple[str, ...] = ()
    why: tuple[tuple[str, str], ...] = ()  # (host, failure message) for failed hosts


@dataclass(frozen=True)
class GateInput:
    outcome: StageOutcome
    failed_total: int
    budget_stage: int
    budget_total: int
    on_failure: str  # rollback | halt
    is_last: bool
    brake: Brake | None = None


@dataclass(frozen=True)
class GateDecision:
    decision: Decision
    reason: str


def decide(g: GateInput) -> GateDecision:
    """The gate: from the stage's outcome, the budgets and the brake, what happens next."""
    o = g.outcome
    if g.brake is not None and g.brake.action == "rollback":
        return GateDecision(Decision.ROLLBACK, f"brake pulled by {g.brake.by}: {g.brake.reason}")
    failed = len(o.failed)
    over_stage = failed > g.budget_stage
    over_total = g.failed_total > g.budget_total
    if over_stage or over_total:
        names = ", ".join(o.failed) or "none in this stage"
        budget = (
            f"stage budget {g.budget_stage}" if over_stage
            else f"release budget {g.budget_total} ({g.failed_total} failed in all)"
        )
        reason = f"{o.stage}: {failed} host(s) failed ({names}); over the {budget}"
        return GateDecision(Decision(g.on_failure), reason)
    if o.untouched:  # only a brake asking for rollback leaves hosts untouched
        return GateDecision(
            Decision.ROLLBACK, f"{o.stage}: brake asked for rollback before "
            f"{', '.join(o.untouched)} were touched",
        )
    if g.brake is not None:
        return GateDecision(
            Decision.WAIT, f"brake pulled by {g.brake.by} ({g.brake.reason}); holding after {o.stage}"
        )
    note = f"{o.stage}: {len(o.succeeded)}/{len(o.hosts)} hosts ok"
    if failed:
        note += f", {failed} failed ({', '.join(o.failed)}) within budget"
    return GateDecision(Decision.FINISH if g.is_last else Decision.CONTINUE, note)


# ---- DAG topology, derived from the machine -------------------------------------------

ROLLBACK_PLAN = "rollback.plan"
ROLLBACK_HOSTS = "rollback.hosts"
ROLLBACK_REPORT = "rollback.report"
HALT = "halt"
FINALIZE = "finalize"
PREPARE = "prepare"
FETCH = "fetch"
ABORT = "abort"  # prepare or fetch failed: no host touched, the run fails saying why


@dataclass(frozen=True)
class StageNode:
    """Task ids of one stage slot and what its gate may choose."""

    stage: str
    enter: str
    release: str
    gate: str
    after_gate: tuple[str, ...]  # bake, then approval, between this gate and the next stage
    next_enter: str  # the next stage's entry, or FINALIZE

    @property
    def continue_target(self) -> str:
        return self.after_gate[0] if self.after_gate else self.next_enter

    @property
    def choices(self) -> dict[Decision, str]:
        return {
            Decision.CONTINUE: self.continue_target,
            Decision.FINISH: FINALIZE,
            Decision.ROLLBACK: ROLLBACK_PLAN,
            Decision.HALT: HALT,
        }


def topology(stages: list[str], approval_after: set[str], bake: bool) -> list[StageNode]:
    """One node per stage slot; bake and approval sit between a gate and the next stage."""
    nodes = []
    for i, stage in enumerate(stages):
        last = i == len(stages) - 1
        after: list[str] = []
        if not last and bake:
            after.append(f"{stage}.bake")
        if not last and stage in approval_after:
            after.append(f"{stage}.approve")
        nodes.append(StageNode(
            stage=stage, enter=f"{stage}.enter", release=f"{stage}.release",
            gate=f"{stage}.gate", after_gate=tuple(after),
            next_enter=FINALIZE if last else f"{stages[i + 1]}.enter",
        ))
    return nodes
