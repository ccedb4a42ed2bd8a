"""The fleet read model: recorded host tasks and runs → the rows the Apps and App views show."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tars_operators.web.fleet import (
    HostRecord, RunRecord, app_row, history_rows, host_rows, versions_text,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
DEPLOY = "tars_deploy__demo"


def released(host: str, version: str, minute: int, run: str = "r1", *, state: str = "success",
             result_state: str = "ok", task: str = "fort.release") -> HostRecord:
    steps = [{"step": "stage", "state": "ok", "seconds": 0.2, "detail": "staged"},
             {"step": "pull_in", "state": "ok", "seconds": 0.1, "detail": "UP in demo"}]
    return HostRecord(DEPLOY, run, task, host, state, T0 + timedelta(minutes=minute),
                      {"host": host, "state": result_state, "version": version, "steps": steps,
                       "phase": "in rotation"})


def failed(host: str, minute: int, run: str, message: str) -> HostRecord:
    return HostRecord(DEPLOY, run, "batch_1.release", host, "failed",
                      T0 + timedelta(minutes=minute), None, message, phase="failed")


def test_each_host_shows_the_version_its_last_successful_task_left_and_the_one_before() -> None:
    recs = [released("h1", "1.0.0", 0), released("h2", "1.0.0", 0),
            released("h1", "2.0.0", 10, "r2"), released("h2", "2.0.0", 10, "r2")]
    rows = host_rows([("h1", "dc1"), ("h2", "dc2"), ("h3", "dc2")], list(reversed(recs)))
    assert [(r.host, r.group, r.version, r.previous_good) for r in rows] == [
        ("h1", "dc1", "2.0.0", "1.0.0"), ("h2", "dc2", "2.0.0", "1.0.0"),
        ("h3", "dc2", None, None)]
    assert (rows[0].last_step, rows[0].last_result, rows[0].detail) == ("pull_in", "ok", "UP in demo")
    assert rows[0].run_id == "r2" and rows[0].at == "2026-11-29T12:10:00+00:00"
    assert rows[2].last_result == "none" and "no Tars task" in rows[2].detail
    assert versions_text(rows) == "2.0.0 ×2, unknown ×1"


def test_a_failed_host_keeps_its_last_known_version_and_shows_why() -> None:
    recs = [released("h1", "1.0.0", 0), failed("h1", 5, "r2", "h1: health: 503 after 15s")]
    [row] = host_rows([("h1", "dc1")], recs)
    assert (row.version, row.last_result, row.detail) == ("1.0.0", "failed",
                                                          "h1: health: 503 after 15s")


def test_a_rollback_moves_the_host_back_and_an_untouched_host_keeps_its_version() -> None:
    recs = [released("h1", "1.0.0", 0), released("h1", "2.0.0", 5, "r2"),
            HostRecord(DEPLOY, "r2", "rollback.hosts", "h1", "success", T0 + timedelta(minutes=6),
                       {"host": "h1", "state": "restored", "version": "1.0.0", "from": "2.0.0",
                        "steps": []}),
            released("h1", "3.0.0", 9, "r3", result_state="untouched")]
    [row] = host_rows([("h1", "")], recs)
    assert (row.version, row.previous_good, row.last_result) == ("1.0.0", "2.0.0", "untouched")


def test_the_version_before_the_first_recorded_release_comes_from_its_activate_step() -> None:
    rec = released("h1", "2.0.0", 1)
    steps = [{"step": "activate", "state": "ok", "detail": "switched 1.0.0 → 2.0.0 and started"},
             {"step": "prune", "state": "ok", "detail": "kept 3"}]
    first = HostRecord(DEPLOY, "r1", "fort.release", "h1", "success", rec.at,
                       {"host": "h1", "state": "ok", "version": "2.0.0", "steps": steps})
    [row] = host_rows([("h1", "")], [first])
    assert (row.version, row.previous_good, row.last_step) == ("2.0.0", "1.0.0", "prune")
    foreign = {**steps[0], "detail": "switched /srv/other → 2.0.0 and started"}
    fresh = HostRecord(DEPLOY, "r1", "fort.release", "h1", "success", rec.at,
                       {"host": "h1", "state": "ok", "version": "2.0.0", "steps": [foreign]})
    assert host_rows([("h1", "")], [fresh])[0].previous_good is None


def test_versions_count_most_hosts_first() -> None:
    recs = [released(f"h{i}", "2.0.0", 1) for i in range(9)] + [released("h9", "1.0.0", 1)]
    rows = host_rows([(f"h{i}", "") for i in range(10)], recs)
    assert versions_text(rows) == "2.0.0 ×9, 1.0.0 ×1"


def run(run_id: str, state: str, minute: int, **kw: object) -> RunRecord:
    return RunRecord(DEPLOY, run_id, state, T0 + timedelta(minutes=minute),
                     None if state in ("running", "queued") else T0 + timedelta(minutes=minute, seconds=90),
                     **kw)  # type: ignore[arg-type]


def test_history_newest_first_with_who_why_outcome_and_duration() -> None:
    runs = [run("r1", "success", 0, conf={"version": "1.0.0", "reason": "conf reason"}, who="ci"),
            run("r2", "failed", 10, plan={"version": "2.0.0", "who": "ann", "reason": "<script>",
                                          "ticket": "OPS-1"}, who="ann", failed_hosts=("h3",),
                note="FAILED at batch_1 · rolled back 3 hosts"),
            run("r3", "running", 20, plan={"version": "2.1.0"}, stage="fort")]
    rows = history_rows(runs)
    assert [(r.run_id, r.version, r.outcome) for r in rows] == [
        ("r3", "2.1.0", "running (stage fort)"), ("r2", "2.0.0", "failed"), ("r1", "1.0.0", "succeeded")]
    r2 = rows[1]
    assert (r2.who, r2.reason, r2.ticket, r2.seconds, r2.hosts_failed, r2.rolled_back) == (
        "ann", "<script>", "OPS-1", 90.0, ("h3",), True)
    assert rows[2].reason == "conf reason" and rows[0].seconds is None


def test_app_row_shows_running_release_last_outcome_brake_and_window() -> None:
    recs = [released("h1", "2.0.0", 1)]
    rows = host_rows([("h1", "")], recs)
    runs = [run("r1", "success", 0, plan={"version": "2.0.0"}),
            run("r2", "failed", 5, plan={"version": "2.1.0"}),
            run("r3", "running", 9, plan={"version": "2.2.0"}, stage="batch_1", who="bob"),
            RunRecord("tars_rollback__demo", "rb", "success", T0 + timedelta(minutes=7),
                      T0 + timedelta(minutes=8))]
    brake = {"by": "ann", "reason": "hold on", "at": "x", "action": "hold"}
    row = app_row("demo", rows, runs, brake, (False, "outside deploy windows"))
    assert row.versions == [("2.0.0", 1)] and row.hosts == 1
    assert row.running == [{"run_id": "r3", "version": "2.2.0", "stage": "batch_1", "who": "bob"}]
    assert row.last is not None and (row.last["run_id"], row.last["outcome"]) == ("r2", "failed")
    assert row.brake == brake and row.window_open is False
    assert app_row("demo", rows, [], None, None).window == "unknown"


def test_a_runs_hosts_follow_the_plan_pending_until_recorded_then_their_steps_or_failure() -> None:
    from tars_operators.web.fleet import run_hosts, run_summary

    plan = {"version": "2.0.0", "stages": [["fort", ["h1"]], ["batch_1", ["h2", "h3"]],
                                           ["batch_2", []]],
            "budget_stage": {"fort": 0, "batch_1": 1}, "budget_total": 1, "who": "ann",
            "reason": "r", "ticket": "T-1"}
    r = run("r2", "running", 0, plan=plan, stage="batch_1")
    recs = [released("h1", "2.0.0", 1, "r2"), failed("h2", 2, "r2", "h2: health: 503"),
            released("h9", "2.0.0", 1, "other-run")]
    rows = run_hosts(r, recs)
    assert [(h.stage, h.host, h.state) for h in rows] == [
        ("fort", "h1", "success"), ("batch_1", "h2", "failed"), ("batch_1", "h3", "pending")]
    assert [s["step"] for s in rows[0].steps] == ["stage", "pull_in"] and rows[0].result == "ok"
    assert rows[1].failure == "h2: health: 503"
    assert (rows[0].phase, rows[1].phase, rows[2].phase) == ("in rotation", "failed", "")
    head = run_summary(r)
    assert head["outcome"] == "running (stage batch_1)" and head["who"] == "ann"
    assert head["stages"] == [{"stage": "fort", "hosts": ["h1"], "budget": 0},
                              {"stage": "batch_1", "hosts": ["h2", "h3"], "budget": 1}]
