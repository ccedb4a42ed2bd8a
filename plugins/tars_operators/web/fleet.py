"""The fleet read model: what Tars recorded in Airflow's database → rows of the Apps and App views.

Pure: the records (host tasks' results, runs, brake, audit) come in as plain dataclasses, read
by ``web.records`` from Airflow's models; no SSH login and no Airflow import here. A host's
state is what the last Tars task that touched it recorded: a release task's result (deploy and
canary runs), a rollback task's result (the run's own rollback or the rollback DAG), or a
failure. A host no task has recorded reads as unknown.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from tars_operators.release.machine import is_release_task, is_restore_task, stage_of
from tars_operators.release.notes import NOT_BACK, ROLLING_BACK
from tars_operators.release.notes import ROLLED_BACK as ROLLED_BACK_HEAD

RUNNING = ("queued", "running")


def is_host_task(task_id: str) -> bool:
    """A task whose result says which version the host runs afterwards."""
    return is_release_task(task_id) or is_restore_task(task_id)


@dataclass(frozen=True)
class HostRecord:
    """One host task instance: its state, its result (return value) and failure message."""

    dag_id: str
    run_id: str
    task_id: str
    host: str
    state: str | None  # the task instance's state
    at: datetime | None  # when it ended (or started, while it runs)
    result: dict[str, Any] | None = None
    failure: str | None = None
    phase: str | None = None  # the host's phase in release/machine when its task failed


@dataclass(frozen=True)
class RunRecord:
    """One run of an app's DAG (deploy, canary or rollback) and the plan ``prepare`` made."""

    dag_id: str
    run_id: str
    state: str | None
    start: datetime | None
    end: datetime | None
    conf: dict[str, Any] = field(default_factory=dict)
    who: str = ""
    plan: dict[str, Any] | None = None
    stage: str | None = None  # the stage a running run is in (last stage entered)
    note: str = ""
    failed_hosts: tuple[str, ...] = ()
    analysis: tuple[str, ...] = ()  # each judged stage's canary analysis verdict line

    @property
    def kind(self) -> str:
        return self.dag_id.split("__", 1)[0].removeprefix("tars_")

    @property
    def version(self) -> str:
        plan = self.plan or {}
        return str(plan.get("version") or self.conf.get("version") or "")

    @property
    def reason(self) -> str:
        return str((self.plan or {}).get("reason") or self.conf.get("reason") or "")

    @property
    def ticket(self) -> str:
        return str((self.plan or {}).get("ticket") or self.conf.get("ticket") or "")

    @property
    def running(self) -> bool:
        return self.state in RUNNING


@dataclass(frozen=True)
class HostRow:
    host: str
    group: str
    version: str | None  # None: no Tars task recorded what it runs
    previous_good: str | None
    last_step: str
    last_result: str  # ok | failed | running | restored | unchanged | untouched | none
    detail: str
    at: str
    run_id: str
    dag_id: str


def _iso(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at else ""


def _stamp(at: datetime | None) -> float:
    """Sort key: aware datetimes as seconds, none first."""
    return at.timestamp() if at else float("-inf")


def host_rows(hosts: list[tuple[str, str]], records: list[HostRecord]) -> list[HostRow]:
    """One row per ``(host, group)``, from the host tasks that touched it, newest last."""
    by_host: dict[str, list[HostRecord]] = {}
    for rec in sorted(records, key=lambda r: _stamp(r.at)):
        by_host.setdefault(rec.host, []).append(rec)
    return [_host_row(name, group, by_host.get(name, [])) for name, group in hosts]


def _host_row(name: str, group: str, history: list[HostRecord]) -> HostRow:
    versions = [v for v in (_version_after(r) for r in history) if v is not None]
    current = versions[-1] if versions else None
    previous = next((v for v in reversed(versions) if v != current), None)
    if previous is None and current is not None:
        previous = _switched_from(history, current)
    if not history:
        return HostRow(name, group, None, None, "", "none", "no Tars task has recorded this host",
                       "", "", "")
    last = history[-1]
    step, result, detail = _last_step(last)
    return HostRow(name, group, current, previous, step, result, detail, _iso(last.at),
                   last.run_id, last.dag_id)


def _version_after(rec: HostRecord) -> str | None:
    """The version the host runs after this task, when its result says so."""
    res = rec.result or {}
    if rec.state != "success" or not res.get("version"):
        return None
    if res.get("state") in ("ok", "restored", "unchanged"):
        return str(res["version"])
    return None


def _switched_from(history: list[HostRecord], current: str) -> str | None:
    """The version an activate step switched away from to ``current`` (its detail says
    ``switched 1.0.0 → 2.0.0 and started``): the host's release before Tars first recorded it."""
    for rec in reversed(history):
        for step in reversed((rec.result or {}).get("steps") or []):
            words = str(step.get("detail") or "").split()
            if (step.get("step") == "activate" and len(words) >= 4 and words[0] == "switched"
                    and words[2] == "→" and words[3] == current and words[1] != "nothing"
                    and "/" not in words[1]):
                return words[1]
    return None


def _last_step(rec: HostRecord) -> tuple[str, str, str]:
    """(step, result, detail) of the host's last task: its last step, or why it failed."""
    res = rec.result or {}
    steps = res.get("steps") or []
    last = steps[-1] if steps else {}
    step = str(last.get("step") or rec.task_id.split(".")[-1])
    if rec.state in ("failed", "upstream_failed"):
        return step, "failed", rec.failure or "the task failed; see its log"
    if rec.state != "success":
        return step, str(rec.state or "queued"), ""
    result = str(res.get("state") or "ok")
    detail = str(last.get("detail") or res.get("detail") or res.get("why") or "")
    return step, result, detail


def version_counts(rows: list[HostRow]) -> list[tuple[str, int]]:
    """``[(version, hosts)]``, most hosts first; hosts with no record count as ``unknown``."""
    counts = Counter(row.version or "unknown" for row in rows)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def versions_text(rows: list[HostRow]) -> str:
    """``2.0.0 ×9, 1.0.0 ×1``."""
    return ", ".join(f"{v} ×{n}" for v, n in version_counts(rows))


@dataclass(frozen=True)
class HistoryRow:
    kind: str  # deploy | canary | rollback
    dag_id: str
    run_id: str
    version: str
    who: str
    reason: str
    ticket: str
    outcome: str
    start: str
    end: str
    seconds: float | None
    hosts_failed: tuple[str, ...]
    rolled_back: bool


def history_rows(runs: list[RunRecord]) -> list[HistoryRow]:
    """Release history, newest first: who, why, outcome and duration of each run."""
    ordered = sorted(runs, key=lambda r: _stamp(r.start), reverse=True)
    return [_history_row(r) for r in ordered]


def _history_row(run: RunRecord) -> HistoryRow:
    seconds = (run.end - run.start).total_seconds() if run.start and run.end else None
    rolled_back = run.kind == "rollback" or "rolled back" in run.note.lower()
    return HistoryRow(run.kind, run.dag_id, run.run_id, run.version, run.who, run.reason,
                      run.ticket, outcome(run), _iso(run.start), _iso(run.end),
                      round(seconds, 1) if seconds is not None else None, run.failed_hosts,
                      rolled_back)


ROLLED_BACK = "ROLLED BACK (run marked failed)"


def outcome(run: RunRecord) -> str:
    """``succeeded`` / ``failed`` / ``running (stage batch_1)`` / ``ROLLED BACK (run marked
    failed)`` / …: a rolled-back release says how its rollback went, not just "failed"."""
    rollback = rollback_outcome(run.note, running=run.running) if run.kind != "rollback" else None
    if rollback is not None and run.state in ("running", "failed"):
        return rollback
    if run.state == "running":
        return f"running (stage {run.stage})" if run.stage else "running"
    return {"success": "succeeded", "failed": "failed"}.get(run.state or "", run.state or "?")


def rollback_outcome(note: str, *, running: bool = False) -> str | None:
    """How a release's own rollback went, from the headline its rollback tasks wrote (None:
    the run did not roll back).

    ``rollback.report`` writes ``rolled back: <why>. Failed hosts: … . 2/2 touched host(s) on
    a good release and UP`` — with ``; NOT: web01, web02`` when it found hosts that are not
    (read from the hosts and the load balancer); ``rollback.plan`` writes ``rolling back N
    host(s) from <version>: <why>`` first, which is all a run whose report never ran shows.
    """
    # A brake pulled while the run was still going is appended to the headline: not ours.
    head = (note or "").split("\n", 1)[0].split(" · brake ", 1)[0]
    if head.startswith(ROLLED_BACK_HEAD):
        if NOT_BACK in head:
            hosts = head.rsplit(NOT_BACK, 1)[1].rstrip(". ")
            return (f"ROLLBACK INCOMPLETE: {hosts} not back on a good release and UP "
                    "(run marked failed)")
        return ROLLED_BACK
    if head.startswith(ROLLING_BACK):
        count = head.removeprefix(ROLLING_BACK).split(" ", 1)[0]
        if running:
            return f"ROLLING BACK {count} host(s)"
        if count == "0":
            return "ROLLED BACK before any host changed (run marked failed)"
        return "ROLLBACK DID NOT FINISH: see the rollback tasks' logs (run marked failed)"
    return None


@dataclass(frozen=True)
class AppRow:
    """One line of the Apps view."""

    app: str
    dag_id: str
    versions: list[tuple[str, int]]
    hosts: int
    running: list[dict[str, str]]  # run_id, version, stage, who
    brake: dict[str, str] | None
    last: dict[str, str] | None  # run_id, version, outcome, end
    window_open: bool | None
    window: str


def app_row(app: str, rows: list[HostRow], runs: list[RunRecord], brake: dict[str, str] | None,
            window: tuple[bool, str] | None) -> AppRow:
    """The app's versions across hosts, running releases, brake, last outcome and window."""
    releases = [r for r in runs if r.kind in ("deploy", "canary")]
    running = [{"run_id": r.run_id, "version": r.version, "stage": r.stage or "", "who": r.who}
               for r in releases if r.running]
    finished = [r for r in releases if not r.running and r.state]
    last = max(finished, key=lambda r: _stamp(r.end or r.start), default=None)
    return AppRow(
        app=app, dag_id=f"tars_deploy__{app}", versions=version_counts(rows), hosts=len(rows),
        running=running, brake=brake,
        last=({"run_id": last.run_id, "version": last.version, "outcome": outcome(last),
               "end": _iso(last.end), "dag_id": last.dag_id} if last else None),
        window_open=window[0] if window else None, window=window[1] if window else "unknown",
    )


@dataclass(frozen=True)
class RunHost:
    """One host of a release run: its task's state, steps (with seconds and detail), failure."""

    stage: str
    host: str
    state: str  # pending | queued | running | deferred | success | failed | …
    result: str  # the host task's own result: ok | untouched | restored | … ('' before it ends)
    steps: list[dict[str, Any]]
    seconds: float | None
    failure: str
    at: str
    phase: str = ""  # where release/machine's host phases left it: "in rotation", "failed", …


def run_hosts(run: RunRecord, records: list[HostRecord]) -> list[RunHost]:
    """The run's hosts stage by stage, in plan order: pending until their task records them.

    A host task that ran twice (a retry, or the run's own rollback) shows its latest record;
    rollback tasks follow the stages under the stage name ``rollback``.
    """
    latest: dict[tuple[str, str], HostRecord] = {}
    for rec in sorted(records, key=lambda r: _stamp(r.at)):
        if rec.run_id == run.run_id and rec.dag_id == run.dag_id:
            latest[(stage_of(rec.task_id), rec.host)] = rec
    planned = [(stage, str(h)) for stage, hosts in plan_stages(run.plan) for h in hosts]
    extra = [key for key in latest if key not in planned]
    return [_run_host(stage, host, latest.get((stage, host))) for stage, host in planned + extra]


def _run_host(stage: str, host: str, rec: HostRecord | None) -> RunHost:
    if rec is None:
        return RunHost(stage, host, "pending", "", [], None, "", "")
    res = rec.result or {}
    steps = [dict(s) for s in res.get("steps") or [] if isinstance(s, dict)]
    seconds = res.get("seconds")
    return RunHost(stage, host, rec.state or "queued", str(res.get("state") or ""), steps,
                   float(seconds) if isinstance(seconds, (int, float)) else None,
                   rec.failure or "", _iso(rec.at), str(res.get("phase") or rec.phase or ""))


def plan_stages(plan: dict[str, Any] | None) -> list[tuple[str, list[Any]]]:
    """(stage, hosts) of a ``prepare`` plan XCom: ``{"name", "hosts"}`` items, or the
    ``[stage, hosts]`` pairs of runs planned before the plan type was unified."""
    return [(str(s["name"]), list(s["hosts"])) if isinstance(s, dict) else (str(s[0]), list(s[1]))
            for s in (plan or {}).get("stages", [])]


def run_summary(run: RunRecord) -> dict[str, Any]:
    """The run's header: version, who, why, outcome, stage, plan and failure budgets."""
    plan = run.plan or {}
    return {
        "dag_id": run.dag_id, "run_id": run.run_id, "kind": run.kind, "version": run.version,
        "who": run.who or str(plan.get("who") or ""), "reason": run.reason, "ticket": run.ticket,
        "outcome": outcome(run),
        "state": run.state or "", "stage": run.stage or "", "start": _iso(run.start),
        "end": _iso(run.end), "note": run.note,
        "stages": [{"stage": s, "hosts": h, "budget": plan.get("budget_stage", {}).get(s)}
                   for s, h in plan_stages(plan) if h],
        "budget_total": plan.get("budget_total"), "failed_hosts": list(run.failed_hosts),
        "budgets": [asdict(b) for b in budgets_used(run)],
        "analysis": list(run.analysis),
    }


@dataclass(frozen=True)
class BudgetUse:
    """Failed hosts against a failure budget: one stage's, or the release's (``total``)."""

    stage: str  # a stage name, or "total"
    failed: int
    budget: int
    over: bool
    text: str  # "failed 1 of budget 2"


def budgets_used(run: RunRecord) -> list[BudgetUse]:
    """Per stage of the plan, then in total: how many of its hosts failed, of how many allowed.

    A gate stops the release when a stage's failures exceed its budget (or the release's
    exceed the total), so ``over`` is what the gate judged.
    """
    plan = run.plan or {}
    per_stage = plan.get("budget_stage") or {}
    failed = set(run.failed_hosts)
    uses: list[BudgetUse] = []
    for stage, hosts in plan_stages(plan):
        if not hosts or stage not in per_stage:
            continue
        uses.append(_use(str(stage), len(failed.intersection(hosts)), int(per_stage[stage])))
    if plan.get("budget_total") is not None:
        uses.append(_use("total", len(failed), int(plan["budget_total"])))
    return uses


def _use(stage: str, failed: int, budget: int) -> BudgetUse:
    over = failed > budget
    text = f"failed {failed} of budget {budget}" + (" (over budget)" if over else "")
    return BudgetUse(stage, failed, budget, over, text)
