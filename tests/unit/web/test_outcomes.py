"""What a run's outcome reads like in the history, the Apps view and the Release tab, and the
failure budgets it used: from what its tasks recorded (note headline, plan, failed hosts)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tars_operators.web.fleet import (
    ROLLED_BACK, RunRecord, app_row, budgets_used, history_rows, outcome, run_summary,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
DEPLOY = "tars_deploy__demo"
PLAN = {"version": "2.0.0", "stages": [["fort", ["h1"]], ["batch_1", ["h2", "h3"]],
                                       ["batch_2", ["h4", "h5", "h6"]]],
        "budget_stage": {"fort": 0, "batch_1": 1, "batch_2": 1}, "budget_total": 2}
WHO = "\n\nby **ann** · ticket T-1 · ship it"


def run(state: str, note: str = "", *, dag_id: str = DEPLOY, failed: tuple[str, ...] = (),
        stage: str | None = None) -> RunRecord:
    return RunRecord(dag_id, "r1", state, T0, T0 if state not in ("running", "queued") else None,
                     plan=PLAN, note=note, failed_hosts=failed, stage=stage)


@pytest.mark.parametrize("state, note, expected", [
    ("success", "done · 6/6 hosts on 2.0.0 · 0 failed (budget 2) · brake off" + WHO, "succeeded"),
    ("failed", "halted at batch 1/2" + WHO, "failed"),
    ("running", "batch 1/2 · 1/6 hosts on 2.0.0", "running (stage batch_1)"),
    ("failed", "rolled back: h2 failed health (budget 0). Failed hosts: h2 (batch_1). "
               "3/3 touched host(s) on a good release and UP." + WHO, ROLLED_BACK),
    ("failed", "rolled back: the approval after fort chose rollback. Failed hosts: none. "
               "1/3 touched host(s) on a good release and UP; NOT: h2, h3." + WHO,
     "ROLLBACK INCOMPLETE: h2, h3 not back on a good release and UP (run marked failed)"),
    ("running", "rolling back 3 host(s) from 2.0.0: budget · brake ON (hold) by bo: db"
     + WHO, "ROLLING BACK 3 host(s)"),
    ("failed", "rolling back 0 host(s) from 2.0.0: the brake said rollback" + WHO,
     "ROLLED BACK before any host changed (run marked failed)"),
    ("failed", "rolling back 2 host(s) from 2.0.0: budget" + WHO,
     "ROLLBACK DID NOT FINISH: see the rollback tasks' logs (run marked failed)"),
])
def test_outcome_says_how_a_rollback_went(state: str, note: str, expected: str) -> None:
    assert outcome(run(state, note, stage="batch_1")) == expected


def test_a_rollback_dags_own_run_reads_succeeded_not_rolled_back() -> None:
    r = run("success", "rolled back: x", dag_id="tars_rollback__demo")
    assert outcome(r) == "succeeded"


def test_history_apps_view_and_release_tab_use_the_same_words() -> None:
    note = ("rolled back: h2 failed. Failed hosts: h2 (batch_1). 3/3 touched host(s) on a "
            "good release and UP." + WHO)
    r = run("failed", note, failed=("h2",))
    [row] = history_rows([r])
    assert row.outcome == ROLLED_BACK and row.rolled_back
    assert app_row("demo", [], [r], None, None).last["outcome"] == ROLLED_BACK  # type: ignore[index]
    assert run_summary(r)["outcome"] == ROLLED_BACK


def test_budgets_used_per_stage_and_in_total() -> None:
    uses = budgets_used(run("failed", failed=("h1", "h2", "h4")))
    assert [(u.stage, u.text) for u in uses] == [
        ("fort", "failed 1 of budget 0 (over budget)"), ("batch_1", "failed 1 of budget 1"),
        ("batch_2", "failed 1 of budget 1"), ("total", "failed 3 of budget 2 (over budget)")]
    assert [u.over for u in uses] == [True, False, False, True]
    summary = run_summary(run("running"))
    assert [b["text"] for b in summary["budgets"]] == [
        "failed 0 of budget 0", "failed 0 of budget 1", "failed 0 of budget 1",
        "failed 0 of budget 2"]


def test_no_plan_yet_no_budgets() -> None:
    r = RunRecord(DEPLOY, "r1", "queued", None, None)
    assert budgets_used(r) == [] and run_summary(r)["budgets"] == []
