"""The ends of a run: finalize (success), halt (fails the run), dry run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from tars_operators.operators.base import SpecOperator
from tars_operators.operators.rollback import decision_reason
from tars_operators.release import restore
from tars_operators.release.events import notify
from tars_operators.release.leases import RunLease, run_holder
from tars_operators.release.machine import FETCH, PREPARE, broken_flow
from tars_operators.release.notes import Progress, compose, set_run_note
from tars_operators.release.observe import analysis_headlines
from tars_operators.release.runtime import run_plan, stage_outcomes
from tars_operators.release.truth import problems, read_truth, reconcile, repair_hint

if TYPE_CHECKING:
    from airflow.sdk import Context


class FinalizeOperator(SpecOperator):
    """All stages passed: repair hosts that failed within budget, then check the hosts' truth.

    The invariant: every planned host runs the release (or, when it failed within budget, a
    known good one) and is UP in the load balancer, and every host that was in rotation before
    is in rotation again — read from the hosts and the LB at the end, not from task states.
    Otherwise the run fails, naming the hosts, what they run and the command that repairs them.
    """

    ui_color = "#ceead6"

    def execute(self, context: Context) -> dict[str, Any]:
        plan = run_plan(context)
        spec = self.spec
        run_id = context["dag_run"].run_id
        # A host whose chain finished but whose report was lost is not a failed host.
        outcomes, late = reconcile(spec, stage_outcomes(context, plan), plan.version, run_id,
                                   log=self.log)
        dr = context["dag_run"]
        broken = broken_flow(context["ti"].get_task_states(dag_id=dr.dag_id, run_ids=[run_id])
                             .get(run_id, {}), plan.slot_names)
        if broken:
            self._stopped(context, plan, outcomes, broken)
        failed = [h for o in outcomes for h in o.failed]
        repaired = restore.repair_failed(spec, failed, plan.version, run_id, log=self.log,
                                          lease=RunLease.from_context(context, spec))
        seen, wrong, hint = self._truth(context, plan, {
            h: (None if h in failed else plan.version) for h in plan.all_hosts})
        done = sum(1 for h in plan.all_hosts if seen[h].on(plan.version))
        where = "succeeded" if not wrong else "FAILED: hosts not where the release says"
        head = Progress(where, done, len(plan.all_hosts), plan.version, len(failed),
                        plan.budget_total, None).line()
        if failed:  # within budget, but the first line must still say who is not on it
            head += f" · NOT on {plan.version}: {', '.join(failed)}"
        details = wrong + hint
        details += [msg for o in outcomes for h, msg in o.why if h in failed]  # why each failed
        details += [f"{h}: finished; its task's report was lost (counted as done: the host "
                    f"runs {plan.version}, marked good by this run, UP)" for h in late]
        details += _repairs(repaired, seen)
        details += analysis_headlines(context["ti"], plan.slot_names)  # canary analysis verdicts
        set_run_note(dr.dag_id, dr.run_id, compose(head, plan.who, plan.reason, plan.ticket,
                                                   details))
        notify(spec, "success" if not wrong else "failure", head, details, run_id=run_id,
               version=plan.version)
        if wrong:
            raise AirflowFailException(head + "\n" + "\n".join(details))
        return {"version": plan.version, "hosts": done, "failed": failed, "late": late}

    def _truth(self, context: Context, plan: Any, expect: dict[str, str | None]
               ) -> tuple[dict[str, Any], list[str], list[str]]:
        """The run is over: read every planned host (giving its lease back in the same session)
        and the LB; the hosts not where ``expect`` says, then the repair command for them and
        the hosts out of rotation that another run holds (named, not this run's failure)."""
        spec = self.spec
        seen = read_truth(spec, plan.all_hosts, log=self.log, release_for=run_holder(context))
        wrong = problems(seen, expect)
        others = [h for h in plan.in_rotation if h not in expect]
        out, elsewhere = restore.rotation_problems(spec, others, mine=run_holder(context))
        wrong += [f"NOT IN ROTATION: {p}" for p in out]
        if not wrong:
            return seen, wrong, elsewhere
        named = [w.split(":", 1)[0] for w in wrong if not w.startswith("NOT IN ROTATION")]
        return seen, wrong, [repair_hint(spec.name, named or others), *elsewhere]

    def _stopped(self, context: Context, plan: Any, outcomes: list[Any],
                 broken: list[str]) -> None:
        """A stage task failed (``broken``), yet Airflow reached finalize: the release did not
        finish. Hosts are left as they are (as a halt does); the run fails naming the task, the
        hosts released, those never started and any host not on a good release and UP."""
        spec, dr = self.spec, context["dag_run"]
        done = [h for o in outcomes for h in o.succeeded]
        failed = [h for o in outcomes for h in o.failed]
        waiting = [h for h in plan.all_hosts if h not in done and h not in failed]
        _, wrong, hint = self._truth(context, plan, {
            h: (plan.version if h in done else None) for h in plan.all_hosts})
        head = Progress(f"FAILED: stopped at {', '.join(broken)} (failed, see its log)",
                        len(done), len(plan.all_hosts), plan.version, len(failed),
                        plan.budget_total, None).line()
        details = [f"the release did not finish: {', '.join(broken)} failed, so the stages "
                   "after it never ran; hosts are left as they are"]
        if waiting:
            details.append(f"not released (still on their release, never touched by this run): "
                           f"{', '.join(waiting)}")
        details += wrong + hint
        details += [msg for o in outcomes for h, msg in o.why if h in failed]
        details.append(f"to finish: release {plan.version} again"
                       + (f" to {', '.join(waiting)}" if waiting else "")
                       + f"; to undo: tars rollback {spec.name} --reason '<why>'")
        set_run_note(dr.dag_id, dr.run_id, compose(head, plan.who, plan.reason, plan.ticket,
                                                   details))
        notify(spec, "failure", head, details, run_id=dr.run_id, version=plan.version)
        raise AirflowFailException(head + "\n" + "\n".join(details))


def _repairs(repaired: dict[str, str], seen: dict[str, Any]) -> list[str]:
    """One line per host that failed within budget: what its repair did.

    A host Tars could not reach to repair that the load balancer still has in rotation keeps
    serving the release it had (it failed before leaving rotation): say so.
    """
    lines = []
    for host, result in repaired.items():
        line = f"{host}: failed within budget; {result}"
        if result.startswith("NOT") and seen[host].in_service and seen[host].lb:
            line += "; the load balancer has it in rotation"
        lines.append(line)
    return lines


class HaltOperator(SpecOperator):
    """Halt: hosts stay as they are (failed ones out of rotation); the run fails, saying so."""

    ui_color = "#f28b82"

    def execute(self, context: Context) -> None:
        plan = run_plan(context)
        reason = decision_reason(context, "halt")
        outcomes, _ = reconcile(self.spec, stage_outcomes(context, plan), plan.version,
                                context["dag_run"].run_id, log=self.log)
        failed = [h for o in outcomes for h in o.failed]
        read_truth(self.spec, plan.all_hosts, log=self.log, release_for=run_holder(context))
        problems, elsewhere = restore.rotation_problems(self.spec, plan.in_rotation,
                                                        mine=run_holder(context))
        text = (f"halted: {reason}. Hosts are left as they are; failed: "
                f"{', '.join(failed) or 'none'}.")
        details = [msg for o in outcomes for _, msg in o.why]  # why each host failed
        details += [f"NOT IN ROTATION: {p}" for p in problems] + elsewhere
        dr = context["dag_run"]
        set_run_note(dr.dag_id, dr.run_id, compose(text, plan.who, plan.reason, plan.ticket,
                                                   details))
        notify(self.spec, "failure", text, details, run_id=dr.run_id, version=plan.version)
        raise AirflowFailException(text + ("\n" + "\n".join(details) if details else ""))


class AbortOperator(SpecOperator):
    """Runs only when ``prepare`` or ``fetch`` failed: no host was touched; the run FAILS.

    Without this leaf the gates skip themselves (their stage never started) and Airflow would
    call the run a success. ``prepare`` writes its own refusal note; a failed fetch (or a
    task that died without saying why) gets its note here.
    """

    ui_color = "#f28b82"

    def execute(self, context: Context) -> None:
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
        notify(self.spec, "failure", text, [], run_id=dr.run_id, version=plan.version)
        raise AirflowFailException(text)


class DryRunOperator(SpecOperator):
    """A dry run ends here: the plan is in the note and the log; no host was touched."""

    def execute(self, context: Context) -> dict[str, Any]:
        plan = run_plan(context)
        for stage in plan.slot_names:
            hosts = plan.hosts(stage)
            self.log.info("%s: %s", stage, ", ".join(hosts) or "(empty)")
        return plan.to_dict()
