"""The gate after each stage: count failures, read the brake, choose the next path."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk.exceptions import AirflowSkipException

from tars_operators.config.spec import AppSpec
from tars_operators.errors import TarsError
from tars_operators.release.analysis import StageAnalysis, after_analysis, analysis_only_approval
from tars_operators.release.brake import read_brake
from tars_operators.release.events import notify
from tars_operators.release import machine as m
from tars_operators.release.machine import (
    Brake, Decision, GateInput, StageNode, StageOutcome, approve_id, decide, release_after_gate,
    route,
)
from tars_operators.release.notes import (
    Progress, compose, failure_from_message, set_run_note, stage_label,
)
from tars_operators.plan.ramp import ReleasePlan
from tars_operators.release.observe import ANALYSIS_BEFORE, Watch, begin, failed_reading, finish
from tars_operators.release.runtime import load_spec, run_plan, stage_outcomes
from tars_operators.release.truth import reconcile
from tars_operators.triggers.brake import BrakeReleasedTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class GateOperator(BaseBranchOperator):
    """Non-mapped, ``all_done``: decides continue / finish / wait (brake) / rollback / halt.

    Skips itself when its stage was not on the run's path (an earlier gate chose otherwise).
    While the brake is pulled it waits in the triggerer, then decides again.
    """

    ui_color = "#fff4e5"

    def __init__(self, *, app: str, node: StageNode, stages: list[str], on_failure: str,
                 config_path: str, defaults_path: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.config_path = config_path
        self.defaults_path = defaults_path
        self.app = app
        self.node = node
        self.stages = stages
        self.on_failure = on_failure
        self._watch: dict[str, Any] | None = None  # a window started before a deferral

    def execute(self, context: Context) -> list[Any]:
        """Branch, and return what the next stage's release maps over (``release_host.
        next_items``; empty unless the run goes on). Going on leads to that release too: it is
        downstream of this gate (its XCom) and waits for its own entry (after bake/approval)."""
        target = self.choose_branch(context)
        going_on = target is not None and target not in (m.ROLLBACK_PLAN, m.HALT, m.FINALIZE)
        nexts = [t for t in self.downstream_task_ids if m.is_release_task(t)] if going_on else []
        self.do_branch(context, [target, *nexts] if target is not None else None)
        if not nexts:
            return []
        from tars_operators.operators.release_host import next_items

        return next_items(context, run_plan(context), m.stage_of(nexts[0]), self.log,
                          record=not self.node.after_gate)

    def choose_branch(self, context: Context) -> str | None:
        ti = context["ti"]
        dr = context["dag_run"]
        entered = ti.get_task_states(
            dag_id=dr.dag_id, run_ids=[dr.run_id], task_ids=[self.node.enter]
        ).get(dr.run_id, {}).get(self.node.enter)
        if entered != "success":
            raise AirflowSkipException(f"{self.node.stage} was not on this run's path")
        plan = run_plan(context)
        outcomes, late = reconcile(load_spec(self.config_path, self.defaults_path),
                                   stage_outcomes(context, plan, upto=self.node.stage),
                                   plan.version, dr.run_id, log=self.log)
        outcome = outcomes[-1]
        failed_total = sum(len(o.failed) for o in outcomes)
        brake = read_brake(self.app)
        remaining = [s for s in plan.slot_names[len(outcomes):] if plan.hosts(s)]
        verdict = decide(GateInput(
            outcome=outcome, failed_total=failed_total,
            budget_stage=plan.budget_for(self.node.stage),
            budget_total=plan.budget_total, on_failure=self.on_failure,
            is_last=not remaining, brake=brake,
        ))
        analysis, ask = None, False
        spec = load_spec(self.config_path, self.defaults_path)
        if (verdict.decision in (Decision.CONTINUE, Decision.FINISH) and outcome.succeeded
                and spec.config.analysis.judges(self.node.stage)):
            analysis = self._analyse(context, spec, plan, outcomes)
            verdict, ask = after_analysis(verdict, analysis, on_failure=self.on_failure,
                                          inconclusive=spec.config.analysis.inconclusive)
            ti.xcom_push(key="analysis", value=analysis.as_dict())
        late_lines = [f"{h}: finished; its task's report was lost (counted as done)" for h in late]
        self._note(context, plan, outcomes,
                   [verdict.reason] + [m for o in outcomes for _, m in o.why] + late_lines
                   + (analysis.lines() if analysis else []), brake)
        target = route(self.node, verdict, remaining=bool(remaining),
                       stage_had_hosts=bool(outcome.hosts))
        if target == approve_id(self.node.stage) and not ask and analysis_only_approval(
                spec.config, self.node.stage):
            target = self.node.next_enter  # that approval is asked only when inconclusive
        release = release_after_gate(self.node, target)
        self.log.info("gate %s: %s — %s; release %s", self.node.stage, verdict.decision.value,
                      verdict.reason, release.value)
        ti.xcom_push(key="decision", value={"decision": verdict.decision.value,
                                            "reason": verdict.reason, "release": release.value})
        if verdict.decision in (Decision.CONTINUE, Decision.FINISH) and outcome.hosts:
            notify(load_spec(self.config_path, self.defaults_path), "stage_passed",
                   f"{self.node.stage} passed: {verdict.reason}",
                   [f"on {plan.version}: {', '.join(outcome.succeeded)}", *(m for _, m in outcome.why)],
                   run_id=dr.run_id, version=plan.version)
        if target is None:
            self.defer(trigger=BrakeReleasedTrigger(self.app), method_name="execute_complete")
        return target

    def _analyse(self, context: Context, spec: AppSpec, plan: ReleasePlan,
                 outcomes: list[StageOutcome]) -> StageAnalysis:
        """Watch the stage's hosts for the window against those the run has not released: inline
        up to ``analysis.defer_after_seconds``, else in the triggerer (no worker slot held)."""
        a, stage = spec.config.analysis, self.node.stage
        window = a.window(spec.config.strategy.bake_seconds)
        try:
            if self._watch is not None:  # back from the triggerer: the window is over
                return finish(spec, Watch.from_dict(self._watch), log=self.log)
            released = {h for o in outcomes for h in o.hosts}
            baseline = [h.name for h in spec.hosts if h.name not in released]
            before = self._before(context["ti"])
            watch = begin(spec, stage, plan.version, list(outcomes[-1].succeeded), baseline,
                          before=before.get("counters"), before_at=before.get("at"), log=self.log)
            if isinstance(watch, StageAnalysis):
                return watch
            if window > a.defer_after_seconds:
                self.log.info("analysis %s: waiting %gs in the triggerer", stage, window)
                self.defer(trigger=DateTimeTrigger(moment=datetime.now(timezone.utc)
                                                   + timedelta(seconds=window)),
                           method_name="analysis_complete", kwargs={"watch": watch.as_dict()})
            time.sleep(window)
            return finish(spec, watch, log=self.log)
        except TarsError as exc:
            self.log.warning("analysis %s: %s", stage, exc)
            return failed_reading(stage, window, exc)

    def _before(self, ti: Any) -> dict[str, Any]:
        """The LB's counters before the stage (``record_before``): read by its entry, or by the
        task before it (fetch, or the previous gate; ``release_host.next_items``)."""
        i = self.stages.index(self.node.stage)
        source = m.gate_id(self.stages[i - 1]) if i else m.FETCH
        return (ti.xcom_pull(task_ids=self.node.enter, key=ANALYSIS_BEFORE)
                or ti.xcom_pull(task_ids=source, key=ANALYSIS_BEFORE) or {})

    def analysis_complete(self, context: Context, event: Any = None,
                          watch: dict[str, Any] | None = None) -> Any:
        """The window the triggerer waited is over: read its end and decide."""
        self._watch = watch
        return self.execute(context)

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        """The brake changed: decide again from fresh state."""
        return self.execute(context)

    def _note(self, context: Context, plan: ReleasePlan, outcomes: list[Any], details: list[str],
              brake: Brake | None) -> None:
        done = sum(len(o.succeeded) for o in outcomes)
        failed = sum(len(o.failed) for o in outcomes)
        where = stage_label(self.node.stage, list(plan.stage_names))
        failures = tuple(failure_from_message(h, m) for o in outcomes for h, m in o.why)
        line = Progress(where, done, len(plan.all_hosts), plan.version, failed,
                        plan.budget_total, brake, failures).line()
        dr = context["dag_run"]
        set_run_note(dr.dag_id, dr.run_id, compose(line, plan.who, plan.reason, plan.ticket,
                                                   details))
