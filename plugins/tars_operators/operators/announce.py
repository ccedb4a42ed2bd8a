"""The last task of a release: the Asset event ``tars://<app>`` for DAGs scheduled on releases."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowSkipException

from tars_operators.operators.base import SpecOperator
from tars_operators.release import machine as m
from tars_operators.release.events import outcome_of, release_asset
from tars_operators.release.runtime import run_plan

if TYPE_CHECKING:
    from airflow.sdk import Context

ANNOUNCE = "release_event"

class AnnounceOperator(SpecOperator):
    """Emits the release's Asset event with extra ``{version, hosts, outcome, run_id, dag_id}``.

    A teardown after finalize / halt / abort / rollback.report: it runs whichever of them ran,
    and as a teardown it does not decide the run's state (Airflow records outlet events only for
    a task that succeeds, so the end tasks that fail the run cannot emit it themselves).
    Skips itself when nothing was released (a dry run, or a release refused before its plan).
    """

    ui_color = "#e6f4ea"

    def __init__(self, *, app: str, **kwargs: Any):
        super().__init__(outlets=[release_asset(app)], **kwargs)
        self.app = app

    def execute(self, context: Context) -> dict[str, Any]:
        ti = context["ti"]
        dr = context["dag_run"]
        ends = [m.FINALIZE, m.HALT, m.ABORT, m.ROLLBACK_REPORT, m.PREPARE]
        states = ti.get_task_states(dag_id=dr.dag_id, run_ids=[dr.run_id],
                                    task_ids=ends).get(dr.run_id, {})
        outcome = outcome_of(states, finalize=m.FINALIZE, halt=m.HALT, abort=m.ABORT,
                             report=m.ROLLBACK_REPORT)
        if outcome is None or states.get(m.PREPARE) != "success":
            raise AirflowSkipException("nothing was released: no release event")
        plan = run_plan(context)
        # Any: the asset event wants JsonValue, and list[str] is no list[JsonValue] (invariance).
        extra: dict[str, Any] = {"version": plan.version, "hosts": list(plan.all_hosts),
                                 "outcome": outcome, "run_id": dr.run_id,
                                 "dag_id": dr.dag_id}
        context["outlet_events"][release_asset(self.app)].extra = extra
        self.log.info("release event %s: %s", release_asset(self.app).uri, extra)
        return extra
