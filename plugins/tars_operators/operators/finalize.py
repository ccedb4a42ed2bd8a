"""The ends of a run: finalize (success), halt (fails the run), dry run."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from tars_operators.operators.release_host import _SpecOperator
from tars_operators.operators.rollback import decision_reason
from tars_operators.release import hostflow
from tars_operators.release.machine import FETCH, PREPARE
from tars_operators.release.notes import Progress, compose, set_run_note
from tars_operators.release.runtime import run_plan, stage_outcomes


class FinalizeOperator(_SpecOperator):
    """All stages passed: repair hosts that failed within budget, check rotation, note it.

    The invariant: every host that was in rotation before the release is in rotation again
    serving a good release — or the run fails, naming the hosts that are not and why.
    """

    ui_color = "#ceead6"

    def execute(self, context: Any) -> dict[str, Any]:
        plan = run_plan(context)
        spec = self.spec
        outcomes = stage_outcomes(context, plan)
        failed = [h for o in outcomes for h in o.failed]
        repaired = hostflow.repair_failed(spec, failed, plan.version,
                                          context["dag_run"].run_id, log=self.log)
        problems = hostflow.rotation_problems(spec, plan.in_rotation)
        done = sum(len(o.succeeded) for o in outcomes)
        head = Progress("succeeded", done, len(plan.all_hosts), plan.version, len(failed),
                        plan.budget_total, None).line()
        if failed:  # within budget, but the first line must still say who is not on it
            head += f" · NOT on {plan.version}: {', '.join(failed)}"
        details = [msg for o in outcomes for _, msg in o.why]  # why each host failed
        details += _repairs(spec, plan, repaired, problems)
        details += [f"NOT IN ROTATION: {p}" for p in problems]
        dr = context["dag_run"]
        set_run_note(dr.dag_id, dr.run_id, compose(head, plan.who, plan.reason, plan.ticket,
                                                   details))
        hostflow.notify(spec, "success" if not problems else "failure", head, details)
        if problems:
            raise AirflowFailException(
                "release finished but hosts that were in rotation before are not: "
                + "; ".join(problems)
            )
        return {"version": plan.version, "hosts": done, "failed": failed}


def _repairs(spec: Any, plan: Any, repaired: dict[str, str], problems: list[str]) -> list[str]:
    """One line per host that failed within budget: repaired, or not and whether it serves.

    A host Tars could not reach to repair (unreachable over SSH) that the load balancer
    still has in rotation keeps serving the release it had: say so, it is not a problem.
    """
    checked = spec.config.traffic.provider != "none"
    out = {p.split(":", 1)[0] for p in problems}
    lines = []
    for host, result in repaired.items():
        line = f"{host}: failed within budget; {result}"
        if checked and host in plan.in_rotation and host not in out and result.startswith("NOT"):
            line += "; the load balancer has it in rotation"
        lines.append(line)
    return lines


class HaltOperator(_SpecOperator):
    """Halt: hosts stay as they are (failed ones out of rotation); the run fails, saying so."""

    ui_color = "#f28b82"

    def execute(self, context: Any) -> None:
        plan = run_plan(context)
        reason = decision_reason(context, "halt")
        outcomes = stage_outcomes(context, plan)
        failed = [h for o in outcomes for h in o.failed]
        problems = hostflow.rotation_problems(self.spec, plan.in_rotation)
        text = (f"halted: {reason}. Hosts are left as they are; failed: "
                f"{', '.join(failed) or 'none'}.")
        details = [msg for o in outcomes for _, msg in o.why]  # why each host failed
        details += [f"NOT IN ROTATION: {p}" for p in problems]
        dr = context["dag_run"]
        set_run_note(dr.dag_id, dr.run_id, compose(text, plan.who, plan.reason, plan.ticket,
                                                   details))
        hostflow.notify(self.spec, "failure", text, details)
        raise AirflowFailException(text + ("\n" + "\n".join(details) if details else ""))


class AbortOperator(_SpecOperator):
    """Runs only when ``prepare`` or ``fetch`` failed: no host was touched; the run FAILS.

    Without this leaf the gates skip themselves (their stage never started) and Airflow would
    call the run a success. ``prepare`` writes its own refusal note; a failed fetch (or a
    task that died without saying why) gets its note here.
    """

    ui_color = "#f28b82"

    def execute(self, context: Any) -> None:
        ti = context["ti"]
        dr = context["dag_run"]
        states = ti.get_task_states(dag_id=dr.dag_id, run_ids=[dr.run_id],
                                    task_ids=[PREPARE, FETCH]).get(dr.run_id, {})
        if states.get(PREPARE) != "success":
            raise AirflowFailException(f"prepare {states.get(PREPARE)}: nothing was released "
                                       "and no host was touched (its note and log say why)")
        plan = run_plan(context)
        failure = ti.xcom_pull(task_ids=FETCH, key="failure") or {}
        why = failure.get("message") or (
            f"fetch {plan.version} {states.get(FETCH)} without a reason (the task died: "
            "see its log); no host was touched")
        text = f"FAILED before any host: {why}"
        set_run_note(dr.dag_id, dr.run_id, compose(text, plan.who, plan.reason, plan.ticket))
        hostflow.notify(self.spec, "failure", text, [])
        raise AirflowFailException(text)


class DryRunOperator(_SpecOperator):
    """A dry run ends here: the plan is in the note and the log; no host was touched."""

    def execute(self, context: Any) -> dict[str, Any]:
        plan = run_plan(context)
        for stage, hosts in plan.stages:
            self.log.info("%s: %s", stage, ", ".join(hosts) or "(empty)")
        return plan.to_dict()
