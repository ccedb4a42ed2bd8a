"""``prepare``: validate the run's params, honour windows, compute the plan — touch no host."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk.exceptions import AirflowFailException

from tars_operators.errors import PlanError, TarsError
from tars_operators.plan.conf import check_run_conf
from tars_operators.release.events import notify
from tars_operators.release.machine import DRY_RUN, FETCH
from tars_operators.release.notes import compose, set_run_note
from tars_operators.release.pools import ensure_pool
from tars_operators.plan.ramp import ReleasePlan
from tars_operators.plan.request import ReleaseRequest, plan_request
from tars_operators.release.runtime import load_spec

if TYPE_CHECKING:
    from airflow.sdk import Context

    from tars_operators.config.spec import AppSpec
    from tars_operators.hooks.lb.base import LoadBalancer


class PrepareOperator(BaseBranchOperator):
    """Validates params against the spec, waits for the deploy window, computes the plan.

    Branches to ``fetch`` (or ``dry_run``). Every refusal happens here, before any host is
    touched, with a message naming the param and what to do.
    """

    ui_color = "#e8f0fe"

    def __init__(self, *, config_path: str, defaults_path: str | None, slots: list[str],
                 canary: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.config_path = config_path
        self.defaults_path = defaults_path
        self.slots = slots
        self.canary = canary

    def choose_branch(self, context: Context) -> str:
        spec = load_spec(self.config_path, self.defaults_path)
        try:
            plan = self._plan(spec, context)
            pool = ensure_pool(spec, self.log)  # traffic.pool: a missing one leaves tasks queued
            if pool:
                self.log.info("%s", pool)
        except TarsError as exc:
            self._refuse(context, str(exc))
        overridden = self._window(spec, context, plan)
        return self._commit(spec, context, plan, overridden)

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        """Back from waiting for the window: check again (it may be a freeze now)."""
        return self.execute(context)

    def _refuse(self, context: Context, message: str) -> None:
        dr = context["dag_run"]
        set_run_note(dr.dag_id, dr.run_id, f"refused before any host was touched: {message}")
        raise AirflowFailException(f"refused before any host was touched: {message}")

    def _plan(self, spec: AppSpec, context: Context) -> ReleasePlan:
        """The run's plan: the rule ``tars plan`` and the plan route apply (plan/request.py)."""
        # Keys outside the form and a malformed raw version are refused, not ignored or trimmed.
        dr = context["dag_run"]
        check_run_conf(dr.conf, self.dag.params.keys(), self.dag.dag_id)
        who = dr.triggering_user_name or ("scheduler" if dr.run_type != "manual" else "")
        request = ReleaseRequest.from_params(context["params"], who=who)
        self._request = request  # preflight's skip_unready plans again without the unready
        return plan_request(spec, request, slots=self.slots, canary=self.canary)

    def _preflight(self, spec: AppSpec, plan: ReleasePlan,
                   context: Context) -> tuple[ReleasePlan, list[str]]:
        """Every planned host's ``runtime.requires``, in parallel, before any host leaves
        rotation: refuse (a ``PlanError`` with the table) or plan without the unready hosts.
        What was found is pushed (XCom ``readiness``) for the App view, refused or not."""
        from tars_operators.assembly.preflight import (
            READINESS, artifact_size, check_planned, decide, readiness_record,
        )

        seen = check_planned(spec, plan.all_hosts,
                             artifact_bytes=artifact_size(spec, plan.version))
        if not seen:
            return plan, []
        at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        context["ti"].xcom_push(key=READINESS, value=readiness_record(seen, at))
        found = decide(spec, plan.all_hosts, seen)
        for line in found.lines:
            self.log.warning("%s", line)
        if not found.skipped:
            return plan, list(found.lines)
        kept = replace(self._request, hosts=list(found.keep), version=plan.version)
        again = plan_request(spec, kept, slots=self.slots, canary=self.canary)
        # In the reason, like a forced window: every later note (gates, finalize) shows it.
        skipped = f"skipped (not ready): {', '.join(found.skipped)}"
        return (replace(again, version=plan.version,
                        reason=" · ".join(p for p in (again.reason, skipped) if p)),
                list(found.lines))

    def _window(self, spec: AppSpec, context: Context, plan: ReleasePlan) -> Any:
        """Return when releasing is allowed now: the closed status a force overrode, or None.

        Otherwise refuses (freeze, ``reject`` policy, nothing ever opens) or defers until the
        window opens — in the triggerer, holding no worker slot.
        """
        from tars_operators.plan.windows import window_status

        schedule = spec.config.schedule
        status = window_status(schedule, datetime.now(timezone.utc))
        if status.open:
            return None
        if plan.forced:
            self.log.warning("window/freeze overridden (force): %s — %s", status.reason, plan.forced)
            self._audit_override(spec, context, plan, status.reason)
            return status
        if status.frozen_by is not None or schedule.outside_window == "reject":
            self._refuse(context, f"{status.reason}; run again inside a window, or set force "
                                  "with a reason")
        if status.next_open is None:
            self._refuse(context, f"{status.reason}; no deploy window ever opens (check "
                                  "schedule.windows and schedule.freezes), or set force with a reason")
        dr = context["dag_run"]
        set_run_note(dr.dag_id, dr.run_id, compose(
            f"waiting for deploy window: {status.reason}",
            plan.who, plan.reason, plan.ticket))
        self.defer(trigger=DateTimeTrigger(moment=status.next_open), method_name="execute_complete")
        return None  # not reached: defer raises

    def _audit_override(self, spec: AppSpec, context: Context, plan: ReleasePlan,
                        closed: str) -> None:
        """Append the override to the app's audit trail (the Variable the brake uses)."""
        from airflow.sdk import Variable

        from tars_operators.release.brake import append_audit, audit_entry, audit_key

        dr = context["dag_run"]
        entry = audit_entry("window overridden", plan.who or "unknown", plan.forced,
                            closed=closed, dag_id=dr.dag_id, run_id=dr.run_id,
                            version=plan.version, ticket=plan.ticket)
        key = audit_key(spec.name)
        Variable.set(key, append_audit(Variable.get(key, default=None), entry))

    def _commit(self, spec: AppSpec, context: Context, plan: ReleasePlan, overridden: Any) -> str:
        from tars_operators.hooks.lb.provider import load_balancer_for

        try:
            plan, ready_lines = self._preflight(spec, plan, context)
        except TarsError as exc:
            self._refuse(context, str(exc))
        in_rotation: tuple[str, ...] = ()
        if spec.config.traffic.provider != "none":
            try:
                with load_balancer_for(spec) as lb:
                    in_rotation = self._check_floor(spec, lb, plan)
            except TarsError as exc:
                self._refuse(context, str(exc))
        plan = replace(plan, in_rotation=in_rotation, reason=_forced_reason(plan, overridden))
        ti = context["ti"]
        ti.xcom_push(key="plan", value=plan.to_dict())
        stages = ", ".join(f"{s.name}: {len(s.hosts)}" for s in plan.stages)
        extra = [f"FORCED past a closed window ({overridden.reason}): {plan.forced}"] if overridden else []
        extra += [f"fort skipped: {plan.skip_fort}"] if plan.skip_fort else []
        extra += ready_lines
        head = ("dry run: " if plan.dry_run else "planned: ") + (
            f"{len(plan.all_hosts)} hosts → {plan.version} ({stages})"
        )
        dr = context["dag_run"]
        set_run_note(dr.dag_id, dr.run_id, compose(head, plan.who, plan.reason, plan.ticket, extra))
        if not plan.dry_run:
            notify(spec, "start", head, [f"by {plan.who}: {plan.reason}", *extra],
                   run_id=dr.run_id, version=plan.version)
        return DRY_RUN if plan.dry_run else FETCH

    def _check_floor(self, spec: AppSpec, lb: LoadBalancer, plan: ReleasePlan) -> tuple[str, ...]:
        """Capacity floor at plan time, against what the LB reports now (down hosts count)."""
        from tars_operators.plan.capacity import live_violation

        states = lb.states(spec.hosts)
        up = tuple(name for name, state in states.items() if state.in_service)
        why = live_violation([s.hosts for s in plan.stages],
                             {name: state.status for name, state in states.items()}, up,
                             plan.min_in_service)
        if why:
            raise PlanError(why)
        return up


def _forced_reason(plan: ReleasePlan, overridden: Any) -> str:
    """The run's reason, plus the override when a force opened a closed window or freeze.

    Every later note (gates, finalize, rollback) shows the reason, so the override stays in
    the run's history, not only in the first note.
    """
    if overridden is None:
        return plan.reason
    freeze = overridden.frozen_by
    closed = (f"through the freeze {freeze.start} to {freeze.end}" if freeze is not None
              else "outside the deploy windows")
    return " · ".join(p for p in (plan.reason, f"FORCED {closed}: {plan.forced}") if p)
