"""Rollback: every host this run touched goes back to its previous good release, in rotation."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from tars_operators.errors import TarsError
from tars_operators.operators.release_host import _SpecOperator
from tars_operators.release import hostflow
from tars_operators.release.machine import ROLLBACK_HOSTS, ROLLBACK_PLAN
from tars_operators.release.notes import compose, set_run_note
from tars_operators.release.runtime import run_plan, stage_outcomes, touched_hosts


def decision_reason(context: Any, wanted: str) -> str:
    """Why the run took the ``wanted`` path (rollback / halt): the last gate that decided.

    A gate that said ``continue`` followed by the run reaching here means the approval
    after that stage chose it (or its timeout default did).
    """
    ti = context["ti"]
    for stage, _ in reversed(run_plan(context).stages):
        d = ti.xcom_pull(task_ids=f"{stage}.gate", key="decision")
        if not d:
            continue
        if d.get("decision") == wanted:
            return d["reason"]
        return f"the approval after {stage} chose {wanted} (answer or timeout default)"
    return "unknown"


class RollbackPlanOperator(_SpecOperator):
    """Which hosts to restore: every host this run touched, failed half-way included."""

    ui_color = "#fce8e6"

    def execute(self, context: Any) -> list[str]:
        plan = run_plan(context)
        outcomes = stage_outcomes(context, plan)
        hosts = touched_hosts(outcomes)
        reason = decision_reason(context, "rollback")
        dr = context["dag_run"]
        set_run_note(dr.dag_id, dr.run_id, compose(
            f"rolling back {len(hosts)} host(s) from {plan.version}: {reason}",
            plan.who, plan.reason, plan.ticket))
        self.log.warning("rolling back %s: %s", ", ".join(hosts) or "no hosts", reason)
        if not hosts:
            raise AirflowFailException(f"rolled back: {reason}. No host had been touched yet.")
        context["ti"].xcom_push(key="reason", value=reason)
        return hosts


class RollbackHostOperator(_SpecOperator):
    """Re-activate the host's previous good release (no download), health-check, pull in.

    In a release's rollback it undoes this run's version; with ``whole_app`` (the rollback
    DAG) it undoes whatever the host runs now.
    """

    ui_color = "#fad2cf"
    template_fields = ("host",)

    def __init__(self, *, host: str, whole_app: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.host = host
        self.whole_app = whole_app

    def execute(self, context: Any) -> dict[str, Any]:
        spec = self.spec
        undo = None if self.whole_app else run_plan(context).version
        try:
            return hostflow.restore_host(spec, spec.host(self.host), undo,
                                         context["dag_run"].run_id, log=self.log)
        except TarsError as exc:
            why = hostflow.short_reason(str(exc), self.host, "rollback")
            # The report names the reason, not just "see its log".
            context["ti"].xcom_push(key="failure", value={"host": self.host, "message": why})
            raise hostflow.StepFailed(f"{self.host}: rollback failed: {why}") from None


class RollbackReportOperator(_SpecOperator):
    """Ends a rolled-back run FAILED, naming the stage, the failed hosts and the reason."""

    ui_color = "#f28b82"

    def execute(self, context: Any) -> None:
        ti = context["ti"]
        dr = context["dag_run"]
        planned = ti.get_task_states(dag_id=dr.dag_id, run_ids=[dr.run_id],
                                     task_ids=[ROLLBACK_PLAN]).get(dr.run_id, {})
        if planned.get(ROLLBACK_PLAN) != "success":
            raise AirflowFailException(f"rollback could not start ({planned.get(ROLLBACK_PLAN)}); "
                                       "see the rollback.plan log")
        plan = run_plan(context)
        reason = ti.xcom_pull(task_ids=ROLLBACK_PLAN, key="reason") or "unknown"
        hosts = ti.xcom_pull(task_ids=ROLLBACK_PLAN) or []
        message, details = hostflow.rollback_summary(context, plan, hosts, ROLLBACK_HOSTS)
        text = f"rolled back: {reason}. {message}"
        set_run_note(dr.dag_id, dr.run_id, compose(text, plan.who, plan.reason, plan.ticket,
                                                   details))
        raise AirflowFailException(text + ("\n" + "\n".join(details) if details else ""))


class AppRollbackPlanOperator(_SpecOperator):
    """The hosts to roll back (all, or the ``hosts`` param); refuses without a reason."""

    def execute(self, context: Any) -> list[str]:
        params = context["params"]
        reason = str(params.get("reason") or "").strip()
        if not reason:
            raise AirflowFailException("params.reason: a rollback needs a reason")
        names = list(params.get("hosts") or []) or [h.name for h in self.spec.hosts]
        dr = context["dag_run"]
        set_run_note(dr.dag_id, dr.run_id, compose(
            f"rolling back {len(names)} host(s) of {self.spec.name} to their previous good release",
            dr.triggering_user_name or "", reason, str(params.get("ticket") or "")))
        return names
