"""Rollback: every host goes to its rollback target (``release.rollback_target``), in rotation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from tars_operators.errors import InvalidValue, TarsError
from tars_operators.operators.base import SpecOperator
from tars_operators.plan.rollback_items import flat_hosts
from tars_operators.release import hostflow, restore
from tars_operators.release.events import notify
from tars_operators.release.leases import RunLease, run_holder, wait_until_free
from tars_operators.release.machine import ROLLBACK_HOSTS, ROLLBACK_PLAN, gate_id
from tars_operators.release.notes import (
    NOT_BACK, ROLLED_BACK, ROLLING_BACK, compose, set_run_note,
)
from tars_operators.release.rollback_target import RollbackTarget, latest_release_run, resolve_rollback
from tars_operators.release.runtime import host_tasks, run_plan, stage_outcomes, touched_hosts
from tars_operators.remote.validate import validate_version
from tars_operators.steps.state import HostState
from tars_operators.tasklog import TaskLog

if TYPE_CHECKING:
    from airflow.sdk import Context

    from tars_operators.config.spec import AppSpec, Host
    from tars_operators.plan.ramp import ReleasePlan


def decision_reason(context: Context, wanted: str) -> str:
    """Why the run took the ``wanted`` path (rollback / halt): the last gate that decided.

    A gate that said ``continue`` followed by the run reaching here means the approval
    after that stage chose it (or its timeout default did).
    """
    ti = context["ti"]
    for stage in reversed(run_plan(context).slot_names):
        d = ti.xcom_pull(task_ids=gate_id(stage), key="decision")
        if not d:
            continue
        if d.get("decision") == wanted:
            return str(d["reason"])
        return f"the approval after {stage} chose {wanted} (answer or timeout default)"
    return "unknown"


class RollbackPlanOperator(SpecOperator):
    """Which hosts to restore: every host this run touched, failed half-way included."""

    ui_color = "#fce8e6"

    def execute(self, context: Context) -> list[Any]:
        plan = run_plan(context)
        outcomes = stage_outcomes(context, plan)
        # A host that failed waiting for its lease was never touched by this run.
        held = {h for o in outcomes for h, msg in o.why if f"{h} failed@lease:" in msg}
        hosts = [h for h in touched_hosts(outcomes) if h not in held]
        reason = decision_reason(context, "rollback")
        dr = context["dag_run"]
        set_run_note(dr.dag_id, dr.run_id, compose(
            f"{ROLLING_BACK}{len(hosts)} host(s) from {plan.version}: {reason}",
            plan.who, plan.reason, plan.ticket))
        self.log.warning("rolling back %s: %s", ", ".join(hosts) or "no hosts", reason)
        notify(self.spec, "rollback", f"{ROLLING_BACK}{len(hosts)} host(s) from {plan.version}: "
               f"{reason}", hosts, run_id=dr.run_id, version=plan.version)
        if not hosts:
            raise AirflowFailException(f"{ROLLED_BACK}{reason}. No host had been touched yet.")
        context["ti"].xcom_push(key="reason", value=reason)
        return mapped_items(self.spec, hosts)


def mapped_items(spec: AppSpec, items: list[Any]) -> list[Any]:
    """What the rollback's host task maps over: one host per task, or chunks of hosts
    (``plan.rollback_items``). With hosts on several queues the list stays flat: each queue's
    picker (``operators.queues``) chunks its own share, so a chunk never mixes queues."""
    from tars_operators.plan.rollback_items import rollback_items

    if len(spec.queues) > 1:
        return items
    return rollback_items(spec.config.strategy.hosts_per_task, items)


def restore_threads(spec: AppSpec, tasks: int, hosts_in_task: int) -> int:
    """Hosts one multi-host rollback task restores at once: the task's share of what the
    capacity floor lets out together (``plan.capacity.task_threads``, the release's bound,
    with the rollback's own parallelism: ``at_once`` tasks at a time)."""
    from tars_operators.plan.capacity import at_once, required_in_service, task_threads

    # the floor of the whole fleet, not of a ramp (the default ramp may not fit it)
    fleet = len(spec.hosts)
    floor = required_in_service(spec.config.traffic.min_in_service, fleet)
    return task_threads(at_once(fleet, floor), tasks, hosts_in_task, fleet, floor,
                        pooled=spec.config.traffic.pool is not None)


class RollbackHostOperator(SpecOperator):
    """One host to its rollback target (no download), healthy, back in rotation — or several
    (``host`` a list: ``strategy.hosts_per_task``), a few at once, each with its own result.

    In a release's rollback the host undoes this run (only where this run switched it; a
    host it never switched is checked and kept). In ``tars_rollback__<app>`` the plan
    resolved the ``target`` once (for a list of hosts: each one's, by name); without one
    (``whole_app``) the host is repaired in place. ``source``: the task whose list this task
    is mapped over (a multi-host task reads how many tasks share the rollback).
    """

    ui_color = "#fad2cf"
    template_fields = ("host",)

    def __init__(self, *, host: str | list[str], whole_app: bool = False,
                 target: dict[str, Any] | None = None, source: str | None = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.host = host
        self.whole_app = whole_app
        self.target = target
        self.source = source

    def execute(self, context: Context) -> Any:
        if not isinstance(self.host, str):
            return self._restore_many(context, [str(h) for h in self.host])
        try:
            return self._restore(context, self.host, self.target)
        except TarsError as exc:
            why = hostflow.short_reason(str(exc), self.host, "rollback")
            # The report names the reason, not just "see its log".
            context["ti"].xcom_push(key="failure", value={"host": self.host, "message": why})
            raise hostflow.StepFailed(f"{self.host}: rollback failed: {why}") from None

    def _restore(self, context: Context, name: str,
                 target: dict[str, Any] | None) -> dict[str, Any]:
        spec = self.spec
        run_id = context["dag_run"].run_id
        # The rollback DAG holds each host only while restoring it; a release's rollback keeps
        # the lease its run took until the rollback report gives every host back.
        lease = RunLease.from_context(context, spec)
        give_back = self.whole_app or self.target is not None
        if target is not None:
            return restore.restore_host(spec, spec.host(name), None, run_id,
                                        target=RollbackTarget.from_dict(target),
                                        lease=lease, give_back_lease=give_back, log=self.log)
        if self.whole_app:
            return restore.restore_host(spec, spec.host(name), None, run_id, lease=lease,
                                        give_back_lease=give_back, log=self.log)
        return restore.restore_host(spec, spec.host(name), run_plan(context).version,
                                    run_id, undo_run=run_id, lease=lease,
                                    give_back_lease=give_back, log=self.log)

    def _restore_one(self, context: Context, name: str) -> dict[str, Any]:
        """One host of a multi-host task; never raises: a failure is a result."""
        target = (self.target or {}).get(name) if self.target is not None else None
        try:
            return self._restore(context, name, target)
        except Exception as exc:  # noqa: BLE001 - one host's failure (or bug) must not lose the others
            if not isinstance(exc, TarsError):
                self.log.error("%s: unexpected error: %r", name, exc)
            why = hostflow.short_reason(str(exc), name, "rollback")
            self.log.error("%s: rollback failed: %s", name, why)
            return {"host": name, "state": "failed", "message": why}

    def _restore_many(self, context: Context, hosts: list[str]) -> list[dict[str, Any]]:
        """Restore this task's hosts a few at once (``restore_threads``); every host's result
        is pushed as it comes (XCom ``host_results``), the failed ones' reasons (``failure``)."""
        from concurrent.futures import ThreadPoolExecutor, as_completed

        ti = context["ti"]
        tasks = len(ti.xcom_pull(task_ids=self.source) or []) if self.source else 1
        threads = restore_threads(self.spec, max(1, tasks), len(hosts))
        self.log.info("%d host(s), %d at once: %s", len(hosts), threads, ", ".join(hosts))
        results: dict[str, dict[str, Any]] = {}

        def push() -> list[dict[str, Any]]:
            ordered = [results.get(h) or {"host": h, "state": "pending"} for h in hosts]
            ti.xcom_push(key="host_results", value=ordered)
            failed = [{"host": r["host"], "message": r.get("message", "")}
                      for r in ordered if r.get("state") == "failed"]
            if failed:
                ti.xcom_push(key="failure", value=failed)
            return ordered

        push()
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="restore") as pool:
            running = {pool.submit(self._restore_one, context, h): h for h in hosts}
            for fut in as_completed(running):  # pushed from this thread only, host by host
                results[running[fut]] = fut.result()
                push()
        ordered = push()
        failed = [r for r in ordered if r.get("state") == "failed"]
        if failed:
            raise hostflow.StepFailed(
                f"rollback failed on {len(failed)} of {len(hosts)} host(s): "
                + "; ".join(f"{r['host']}: {r.get('message')}" for r in failed[:5])
                + (" …" if len(failed) > 5 else ""))
        return ordered


class RollbackReportOperator(SpecOperator):
    """Ends a rolled-back run FAILED, naming the stage, the failed hosts and the reason.

    What it says about each touched host is read from the host and the load balancer at the
    end (not from task states): hosts not on a good release, or not UP, come first, with
    the command that repairs them.
    """

    ui_color = "#f28b82"

    def execute(self, context: Context) -> None:
        ti = context["ti"]
        dr = context["dag_run"]
        planned = ti.get_task_states(dag_id=dr.dag_id, run_ids=[dr.run_id],
                                     task_ids=[ROLLBACK_PLAN]).get(dr.run_id, {})
        if planned.get(ROLLBACK_PLAN) in ("skipped", None):  # all_done (several queues)
            raise AirflowSkipException("this run did not roll back")
        if planned.get(ROLLBACK_PLAN) != "success":
            raise AirflowFailException(f"rollback could not start ({planned.get(ROLLBACK_PLAN)}); "
                                       "see the rollback.plan log")
        plan = run_plan(context)
        reason = ti.xcom_pull(task_ids=ROLLBACK_PLAN, key="reason") or "unknown"
        hosts = flat_hosts(ti.xcom_pull(task_ids=ROLLBACK_PLAN))
        message, details = rollback_summary(context, self.spec, plan, hosts)
        text = f"{ROLLED_BACK}{reason}. {message}"
        # This task is red in every rolled-back run; say first that red means "run failed".
        # When hosts are NOT back, the headline says so and the note's room goes to them.
        self.log.error("%s", report_first_line(message))
        if NOT_BACK not in message:
            details = [report_first_line(message)] + details
        set_run_note(dr.dag_id, dr.run_id, compose(text, plan.who, plan.reason, plan.ticket,
                                                   details))
        notify(self.spec, "failure", text, details, run_id=dr.run_id, version=plan.version)
        raise AirflowFailException(text + ("\n" + "\n".join(details) if details else ""))


def report_first_line(message: str) -> str:
    """What the red ``rollback.report`` means: the run is marked failed; did the rollback work?"""
    if NOT_BACK in message:
        return ("rollback.report fails the run: the release was rolled back, but NOT every "
                "touched host is back on a good release and UP (below)")
    return ("rollback.report fails the run on purpose: the rollback itself succeeded (every "
            "touched host is back on a good release and UP); the release did not go out")


def rollback_summary(context: Context, spec: AppSpec, plan: ReleasePlan,
                     hosts: list[str]) -> tuple[str, list[str]]:
    """After a run's rollback: hosts not back on a good release and UP first, then the rest."""
    from tars_operators.plan.tasks import host_index, task_items
    from tars_operators.release.runtime import every_map, flat_records, pushed_failures
    from tars_operators.release.truth import problems, read_truth, reconcile, repair_hint

    ti = context["ti"]
    dr = context["dag_run"]
    outcomes, _ = reconcile(spec, stage_outcomes(context, plan), plan.version, dr.run_id)
    tasks = host_tasks(context, ROLLBACK_HOSTS, hosts)
    states = ti.get_task_states(dag_id=dr.dag_id, run_ids=[dr.run_id],
                                task_ids=[t.task_id for t in tasks]).get(dr.run_id, {})
    reasons: dict[str, str] = {}
    by_host: dict[str, Any] = {}
    task_state: dict[str, str] = {}  # host → its rollback task's state
    for t in tasks:
        if not t.hosts:
            continue
        # the plan's rule (mapped_items): one host per task, or chunks with host_results
        items = task_items(spec.config.strategy.hosts_per_task, t.hosts)
        many = any(not isinstance(i, str) for i in items)
        reasons.update(pushed_failures(ti, t.task_id))
        results = every_map(ti, t.task_id, "host_results" if many else "return_value")
        by_host.update({str(r["host"]): r for r in flat_records(results)
                        if r.get("host") and r.get("version") and r.get("state") != "failed"})
        task_state.update({h: states.get(f"{t.task_id}_{i}", "unknown")
                           for h, (i, _) in host_index(items).items()})
    seen = read_truth(spec, hosts, release_for=run_holder(context))  # the run is over
    wrong = [f"{h}: still runs {plan.version}, the release being undone"
             for h in hosts if seen[h].on(plan.version)]
    wrong += problems(seen, {h: None for h in hosts if not seen[h].on(plan.version)})
    others = [h for h in plan.in_rotation if h not in hosts]
    out, elsewhere = restore.rotation_problems(spec, others, mine=run_holder(context))
    wrong += [f"NOT IN ROTATION: {p}" for p in out]
    details = list(wrong)
    bad = sorted({w.split(":", 1)[0] for w in wrong if not w.startswith("NOT IN ROTATION")})
    if bad:
        details.append(repair_hint(spec.name, bad))
    restored = []
    for h in hosts:  # hosts not restored before the why: notes are cut from the end
        if h in by_host:
            r = by_host[h]
            moved = r.get("moved", True)
            restored.append(f"{h}: restored to {r['version']}, in rotation" if moved
                            else f"{h}: on {r['version']} (not moved), in rotation")
        else:
            state = task_state.get(h, "unknown")
            details.append(f"{h}: NOT restored (rollback task {state}): "
                           f"{reasons.get(h, 'see its log')}")
    details += [msg for o in outcomes for _, msg in o.why] + restored + elsewhere
    failed = [f"{h} ({o.stage})" for o in outcomes for h in o.failed]
    ok = sum(1 for h in hosts if seen[h].good and seen[h].in_service
             and not seen[h].on(plan.version))
    message = (f"Failed hosts: {', '.join(failed) or 'none'}. "
               f"{ok}/{len(hosts)} touched host(s) on a good release and UP"
               + (f"{NOT_BACK}{', '.join(bad)}" if bad else "") + ".")
    return message, details


class AppRollbackPlanOperator(SpecOperator):
    """Each host's rollback target, resolved once: undo the app's latest release run where it
    switched hosts (the others stay), or the ``version`` param on every listed host.

    Returns ``[{"host": …, "target": {…}}]`` (mapped over by the restore tasks; many hosts:
    chunks ``{"host": [names], "target": {name: {…}}}``, ``mapped_items``); refuses without a
    reason or with an unsafe version.
    """

    def execute(self, context: Context) -> list[dict[str, Any]]:
        params = context["params"]
        reason = str(params.get("reason") or "").strip()
        if not reason:
            raise AirflowFailException("params.reason: a rollback needs a reason")
        explicit = _explicit_version(params.get("version"))
        names = list(params.get("hosts") or []) or [h.name for h in self.spec.hosts]
        try:  # never resolve targets from hosts another run (a release) is changing
            wait_until_free(self.spec, [h.name for h in self.spec.hosts],
                            RunLease.from_context(context, self.spec), log=self.log)
        except TarsError as exc:
            raise AirflowFailException(f"rollback refused: {exc}") from None
        states, unread = read_states(self.spec, self.log)
        run = latest_release_run(states.values()) if explicit is None else None
        targets = {name: (RollbackTarget(None, False, f"could not read the host: {unread[name]}")
                          if name in unread else
                          resolve_rollback(states[name], undo_run=run.run_id if run else None,
                                           explicit=explicit))
                   for name in names}
        lines = [t.line(name) for name, t in targets.items()]
        what = (f"to {explicit}" if explicit else
                f"undoing run {run.run_id} ({run.version})" if run else "repairing in place")
        moving = sum(1 for t in targets.values() if t.move)
        headline = (f"rolling back {self.spec.name} {what}: {moving} of {len(names)} host(s) move, "
                    f"{sum(1 for t in targets.values() if t.refused)} refused")
        self.log.warning("%s\n%s", headline, "\n".join(lines))
        dr = context["dag_run"]
        set_run_note(dr.dag_id, dr.run_id, compose(
            headline, dr.triggering_user_name or "", reason, str(params.get("ticket") or ""), lines))
        context["ti"].xcom_push(key="targets", value=lines)
        return mapped_items(self.spec, [{"host": name, "target": t.as_dict()}
                                        for name, t in targets.items()])


def _explicit_version(value: Any) -> str | None:
    if value is None or not str(value).strip():
        return None
    try:
        return validate_version(str(value).strip())
    except InvalidValue as exc:
        raise AirflowFailException(f"params.version: {exc}") from None


def read_states(spec: AppSpec, log: TaskLog) -> tuple[dict[str, HostState], dict[str, str]]:
    """Every host's state, read in parallel; hosts that could not be read, with why."""
    from concurrent.futures import ThreadPoolExecutor

    from tars_operators.hooks.ssh import open_session
    from tars_operators.steps.state import layout_for, read_host_state

    def read(host: Host) -> HostState | str:
        try:
            with open_session(spec, host) as session:
                return read_host_state(session, layout_for(spec, host), step="rollback plan")
        except TarsError as exc:
            log.warning("%s: could not read its state: %s", host.name, exc)
            return hostflow.short_reason(str(exc), host.name, "rollback plan")

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(spec.hosts)))) as pool:
        read_all = dict(zip([h.name for h in spec.hosts], pool.map(read, spec.hosts)))
    return ({n: s for n, s in read_all.items() if isinstance(s, HostState)},
            {n: s for n, s in read_all.items() if isinstance(s, str)})
