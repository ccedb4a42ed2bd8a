"""Stage-by-stage progress of a run, from what the REST API shows (pure: no I/O).

A :class:`Snapshot` condenses a run and its task instances; :func:`changes` says, in lines a
person reads in a CI log, what moved between two snapshots.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tars_operators.release.machine import (
    PREPARE, ROLLBACK_GROUP, ROLLBACK_HOSTS, gate_id, is_release_task, restore_base, stage_of,
)

HOSTS_IN_LABEL = re.compile(r"\((\d+) hosts\)$")  # factory/builder.py HOSTS_LABEL
DONE_OK = {"success"}
NOT_STARTED = "upstream_failed"
ACTIVE = {"running", "queued", "scheduled", "deferred", "up_for_retry", "restarting"}
# Tasks of a release that wait on something other than a worker.
WINDOW_TASK = PREPARE


@dataclass(frozen=True)
class StageView:
    """A mapped task (one per host): fort.release, batch_1.release, rollback.hosts, restore.

    A task of several hosts (``strategy.hosts_per_task``) that failed may have released most of
    them: the REST API shows the task's state, not each host's result, so its hosts are counted
    apart (``unsure``) and the run note names the failed ones.
    """

    name: str
    hosts: int
    done: int
    failed: int  # hosts of failed one-host tasks
    active: int
    unsure: int = 0  # hosts of failed multi-host tasks: some may be released
    not_started: int = 0  # tasks the scheduler never started (their stage's entry failed)

    @property
    def finished(self) -> bool:
        return self.hosts > 0 and (self.done + self.failed + self.unsure + self.not_started
                                   == self.hosts)

    def line(self) -> str:
        bad = f", {self.failed} FAILED" if self.failed else ""
        if self.unsure:
            bad += (f", {self.unsure} in failed multi-host task(s) (the run note names the "
                    "hosts that failed)")
        if self.not_started:
            bad += f", {self.not_started} never started"
        if self.finished:
            return f"{self.name}: {self.done}/{self.hosts} host(s) done{bad}"
        return f"{self.name}: {self.done}/{self.hosts} host(s) done{bad}, {self.active} in progress"


@dataclass(frozen=True)
class Snapshot:
    state: str
    headline: str  # first line of the run note, where Tars says where the release stands
    stages: tuple[StageView, ...]
    waiting_window: bool
    approvals: tuple[str, ...]  # task ids awaiting a human answer
    braked_at: tuple[str, ...]  # gates deferred while the brake is pulled
    failed_tasks: tuple[str, ...]


def task_hosts(ti: dict[str, Any]) -> int:
    """Hosts a mapped task instance works on: its label says ``… (25 hosts)`` when several."""
    label = str(ti.get("rendered_map_index") or "")
    found = HOSTS_IN_LABEL.search(label)
    return int(found.group(1)) if found else 1


def stage_name(task_id: str) -> str:
    """``batch_1.release`` (and its per-queue ``batch_1.release.dc2``) → ``batch_1``;
    ``rollback.hosts`` → ``rollback``; else the task id (the rollback DAG's ``restore`` keeps
    its own name, for every queue)."""
    base = restore_base(task_id)
    if is_release_task(task_id) or base == ROLLBACK_HOSTS:
        return stage_of(task_id)
    return base or task_id


def is_gate(task_id: str) -> bool:
    """A stage's gate (``batch_1.gate``), by the machine's own naming."""
    return task_id == gate_id(stage_of(task_id))


def _order(task_id: str) -> tuple[int, int, str]:
    """Release order: fort, batch_1, batch_2, …, then anything else, rollback last."""
    name = stage_name(task_id)
    if name == "fort":
        return (0, 0, name)
    if name.startswith("batch_") and name[6:].isdigit():
        return (1, int(name[6:]), name)
    return (3 if name == ROLLBACK_GROUP else 2, 0, name)


def snapshot(run: dict[str, Any], tis: list[dict[str, Any]]) -> Snapshot:
    """Condense a run (``GET …/dagRuns/{id}``) and its task instances."""
    mapped: dict[str, list[tuple[str | None, int]]] = {}
    for ti in tis:
        if ti.get("map_index", -1) >= 0:
            # A stage's per-queue tasks count as one stage.
            # A task of several hosts (strategy.hosts_per_task) counts each of its hosts.
            mapped.setdefault(stage_name(ti["task_id"]), []).append(
                (ti.get("state"), task_hosts(ti)))

    def hosts(tasks: list[tuple[str | None, int]], want: Any) -> int:
        return sum(n for state, n in tasks if want(state, n))

    stages = tuple(
        StageView(stage_name(name), hosts(tasks, lambda s, n: True),
                  done=hosts(tasks, lambda s, n: s in DONE_OK),
                  failed=hosts(tasks, lambda s, n: s == "failed" and n == 1),
                  active=hosts(tasks, lambda s, n: s in ACTIVE or s == "awaiting_input"),
                  unsure=hosts(tasks, lambda s, n: s == "failed" and n > 1),
                  not_started=hosts(tasks, lambda s, n: s == NOT_STARTED))
        for name, tasks in sorted(mapped.items(), key=lambda item: _order(item[0]))
    )

    def unmapped(state: str) -> tuple[str, ...]:
        return tuple(sorted(t["task_id"] for t in tis
                            if t.get("map_index", -1) < 0 and t.get("state") == state))

    deferred = unmapped("deferred")
    return Snapshot(
        state=str(run.get("state")),
        headline=(run.get("note") or "").strip().splitlines()[0] if run.get("note") else "",
        stages=stages,
        waiting_window=WINDOW_TASK in deferred,
        approvals=unmapped("awaiting_input"),
        braked_at=tuple(t for t in deferred if is_gate(t)),
        failed_tasks=tuple(sorted({t["task_id"] for t in tis if t.get("state") == "failed"})),
    )


def changes(old: Snapshot | None, new: Snapshot, *, approve_hint: str = "") -> list[str]:
    """The progress lines for what moved from ``old`` to ``new`` (everything when ``old`` is None)."""
    lines: list[str] = []
    if old is None or old.state != new.state:
        lines.append(f"run {new.state}")
    if new.headline and (old is None or old.headline != new.headline):
        lines.append(new.headline)
    if new.waiting_window and (old is None or not old.waiting_window):
        lines.append("waiting for the deploy window (deferred: no worker slot is held)")
    before = {s.name: s for s in old.stages} if old else {}
    for stage in new.stages:
        seen = before.get(stage.name)
        if seen is None or (seen.done, seen.failed, seen.unsure, seen.not_started,
                            seen.hosts) != (stage.done, stage.failed, stage.unsure,
                                            stage.not_started, stage.hosts):
            lines.append(stage.line())
    for task_id in new.approvals:
        if old is None or task_id not in old.approvals:
            lines.append(f"awaiting approval after {stage_of(task_id)}"
                         + (f": {approve_hint}" if approve_hint else ""))
    for gate in new.braked_at:
        if old is None or gate not in old.braked_at:
            lines.append(f"brake pulled: holding at {gate} until it is released")
    return lines


def outcome(final: Snapshot) -> tuple[int, str]:
    """Exit code and the reason line of a finished run: 0 success, 1 anything else."""
    if final.state == "success":
        return 0, f"success: {final.headline}" if final.headline else "success"
    why = final.headline or (
        "failed tasks: " + ", ".join(final.failed_tasks) if final.failed_tasks else "no reason given"
    )
    return 1, f"{final.state}: {why}"
