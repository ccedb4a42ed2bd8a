"""The release state machine, explicit and pure; the DAG's structure is derived from it.

Release: planned → [waiting for window] → stage(fort) → gate → [bake] → [awaiting approval]
→ stage(batch_1) → gate → … → succeeded; from a gate: braked (paused until released),
rolling back → rolled back, or halted. Host: pending → staged → out of rotation → active →
healthy → in rotation, or failed@<step> → restored after rollback (or untouched when a brake
stopped the release before the host was reached).

``docs/release-state-machine.md`` draws both machines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    # A later gate rolled back; or the run lost the host's lease as it recorded the pull-in.
    HostPhase.IN_ROTATION: frozenset({HostPhase.RESTORED, HostPhase.FAILED}),
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


@dataclass
class HostTrack:
    """One host's way through the chain: every phase change checked against
    ``HOST_TRANSITIONS`` and kept in order (the host task's result carries it)."""

    host: str
    phases: list[HostPhase] = field(default_factory=lambda: [HostPhase.PENDING])

    @property
    def phase(self) -> HostPhase:
        return self.phases[-1]

    def to(self, new: HostPhase) -> None:
        """Move to ``new``; an illegal transition is a bug in the chain and raises."""
        try:
            check_transition(HOST_TRANSITIONS, self.phase, new)
        except ValueError as exc:
            raise ValueError(f"{self.host}: {exc}") from None
        self.phases.append(new)

    def after_step(self, step: str) -> None:
        """A chain step succeeded: the phase it leads to (steps that only confirm the phase,
        such as smoke after health, or housekeeping such as mark and prune, change nothing)."""
        new = HOST_PHASE_AFTER_STEP.get(step)
        if new is not None and new is not self.phase:
            self.to(new)

    def as_list(self) -> list[str]:
        return [p.value for p in self.phases]

    @classmethod
    def replay(cls, host: str, steps: list[str]) -> HostTrack:
        """The track after ``steps`` succeeded in order (a resumed task rebuilds it)."""
        track = cls(host)
        for step in steps:
            track.after_step(step)
        return track


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


def before_host(brake: Brake | None) -> Decision:
    """Before a host is touched: go on (CONTINUE), wait until the brake is released (WAIT), or
    leave the host untouched because the brake asks for rollback (ROLLBACK)."""
    if brake is None:
        return Decision.CONTINUE
    return Decision.ROLLBACK if brake.action == "rollback" else Decision.WAIT


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
DRY_RUN = "dry_run"


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
            after.append(bake_id(stage))
        if not last and stage in approval_after:
            after.append(approve_id(stage))
        nodes.append(StageNode(
            stage=stage, enter=enter_id(stage), release=release_id(stage),
            gate=gate_id(stage), after_gate=tuple(after),
            next_enter=FINALIZE if last else enter_id(stages[i + 1]),
        ))
    return nodes


def route(node: StageNode, verdict: GateDecision, *, remaining: bool,
          stage_had_hosts: bool) -> str | None:
    """The task a gate leads to after ``verdict``; None while the brake holds (the gate waits).

    ``remaining``: a later stage slot has hosts; without one, continuing is finishing. An
    empty stage goes straight to the next stage (no bake, no approval for nothing).
    """
    d = verdict.decision
    if d is Decision.WAIT:
        return None
    if d is Decision.FINISH or (d is Decision.CONTINUE and not remaining):
        return node.choices[Decision.FINISH]
    if d is Decision.CONTINUE and not stage_had_hosts:
        return node.next_enter
    return node.choices[d]


# An approval's answers (as shown to the person) for ``strategy.approval.default``.
APPROVAL_ANSWERS = {"continue": "Continue", "rollback": "Roll back", "halt": "Halt"}


def approval_choices(continue_to: str) -> dict[str, str]:
    """Where each answer of an approval leads: on (``continue_to``), the rollback, or halt."""
    return {APPROVAL_ANSWERS["continue"]: continue_to,
            APPROVAL_ANSWERS["rollback"]: ROLLBACK_PLAN, APPROVAL_ANSWERS["halt"]: HALT}


def release_after_gate(node: StageNode, target: str | None) -> Release:
    """The release's phase once the gate of ``node`` sent the run to ``target`` (checked)."""
    if target is None:
        new = Release.BRAKED
    elif target == ROLLBACK_PLAN:
        new = Release.ROLLING_BACK
    elif target == HALT:
        new = Release.HALTED
    elif target == FINALIZE:
        new = Release.SUCCEEDED
    elif target.endswith(".bake"):
        new = Release.BAKING
    elif target.endswith(".approve"):
        new = Release.AWAITING_APPROVAL
    else:
        new = Release.RUNNING_STAGE
    check_transition(RELEASE_TRANSITIONS, Release.AT_GATE, new)
    return new


# ---- task ids: the one place that names them (builder, runtime, views all ask here) -----

ROLLBACK_GROUP = "rollback"
RESTORE_PLAN = "plan"  # the rollback DAG: which host goes to which release
RESTORE = "restore"  # the rollback DAG's per-host task
HOST_TASK_SUFFIX = ".release"


def enter_id(stage: str) -> str:
    return f"{stage}.enter"


def release_id(stage: str) -> str:
    """The per-host release task of ``stage`` (mapped over its hosts)."""
    return f"{stage}{HOST_TASK_SUFFIX}"


def gate_id(stage: str) -> str:
    return f"{stage}.gate"


def bake_id(stage: str) -> str:
    return f"{stage}.bake"


def approve_id(stage: str) -> str:
    return f"{stage}.approve"


def in_group(task_id: str) -> str:
    """``fort.enter`` → ``enter``: the id inside its task group (the builder's ``task_id=``)."""
    return task_id.split(".", 1)[1] if "." in task_id else task_id


def is_release_task(task_id: str) -> bool:
    """A stage's per-host release task (``batch_1.release``, or ``batch_1.release.dc2`` when
    the app's hosts run on several queues)."""
    parts = task_id.split(".")
    return task_id.endswith(HOST_TASK_SUFFIX) or (len(parts) == 3 and parts[1] == "release")


def is_enter_task(task_id: str) -> bool:
    return task_id.endswith(".enter")


def is_restore_task(task_id: str) -> bool:
    """A per-host restore: the run's own rollback or the rollback DAG's (any queue's)."""
    return restore_base(task_id) is not None


def restore_base(task_id: str) -> str | None:
    """``rollback.hosts`` or ``restore`` for one of their tasks (``rollback.hosts.dc2`` too)."""
    for base in (ROLLBACK_HOSTS, RESTORE):
        if task_id == base or (task_id.startswith(base + ".") and task_id.count(".") == base.count(".") + 1):
            return base
    return None


# ---- queues: one mapped host task per queue of the app's hosts --------------------------
# Airflow sets ``queue`` on the whole mapped task (partial_kwargs), not per map index, so a
# host task (release, rollback, restore) is built once per distinct queue of the app's hosts.
# One queue (the usual case): the task keeps its plain id. Several: the default queue's task
# keeps the plain id and each named queue's task gets ``.<queue>`` after it; each maps over
# the return value of a small task that picks its queue's hosts from the source's list
# (Airflow maps over return values only, and cannot filter one).

Queue = str | None  # None: the executor's default queue


@dataclass(frozen=True)
class HostTasks:
    """One mapped host task of a stage (or rollback): its id, queue and hosts in map order."""

    task_id: str
    queue: Queue
    hosts: tuple[str, ...]



def queue_hosts_id(source: str, queue: Queue) -> str:
    """The task that picks ``queue``'s hosts out of ``source``'s list (``fort.enter.dc2``;
    ``._default`` for the default queue: a queue name starts with a letter or digit)."""
    return f"{source}.{queue if queue is not None else '_default'}"


def host_task_id(base: str, queue: Queue, queues: Sequence[Queue]) -> str:
    """The id of ``base``'s task on ``queue`` when the app's hosts use ``queues``."""
    if len(queues) <= 1 or queue is None:
        return base
    return f"{base}.{queue}"


def split_hosts(base: str, hosts: Sequence[str], queue_of: Mapping[str, Queue],
                queues: Sequence[Queue]) -> tuple[HostTasks, ...]:
    """``hosts`` shared among ``base``'s per-queue tasks, each keeping the hosts' order (its
    map index); a host whose queue has no task (a config changed since the DAG was parsed)
    goes to the first one."""
    known = list(queues) or [None]
    where = {h: queue_of.get(h) if queue_of.get(h) in known else known[0] for h in hosts}
    return tuple(HostTasks(host_task_id(base, q, known), q,
                           tuple(h for h in hosts if where[h] == q)) for q in known)


FLOW_TASKS = ("enter", "gate", "bake", "approve")  # a stage's own tasks around its host tasks


def broken_flow(states: Mapping[str, str | None], stages: Sequence[str]) -> list[str]:
    """The stage tasks that failed (an entry or its queue picker, a gate, a bake, an approval):
    the run stopped there, and the stages after it never ran, whatever ran after them (Airflow
    runs ``finalize`` when its gates did not fail, e.g. after an approval task Airflow lost)."""
    return sorted(t for t, state in states.items() if state == "failed"
                  and t.split(".")[0] in stages and len(t.split(".")) >= 2
                  and t.split(".")[1] in FLOW_TASKS)


def stage_of(task_id: str) -> str:
    """The stage a stage task belongs to (``batch_1.release`` → ``batch_1``); the rollback's
    tasks belong to ``rollback``; any other task id is returned as it is."""
    if is_restore_task(task_id):
        return ROLLBACK_GROUP
    return task_id.split(".", 1)[0] if "." in task_id else task_id
