"""The views show each host of a multi-host release task (``strategy.hosts_per_task``) on its own
row: its version, its result's steps, its failure reason, as a one-host task shows them."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from tars_operators.web.fleet import host_rows
from tars_operators.web.records import HOST_RESULTS, _host_records

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 30, 1, 0, tzinfo=timezone.utc)
DEPLOY = "tars_deploy__demo"


def ti(state: str, map_index: int = 0) -> Any:
    return SimpleNamespace(dag_id=DEPLOY, run_id="r1", task_id="batch_1.release",
                           map_index=map_index, state=state, start_date=T0, end_date=T0,
                           rendered_map_index="h1 … h3 (3 hosts)")


def ok(host: str, **extra: Any) -> dict[str, Any]:
    return {"host": host, "state": "ok", "version": "2.0.0", "phase": "in rotation",
            "steps": [{"step": "activate", "state": "ok", "seconds": 0.1,
                       "detail": "switched 1.0.0 → 2.0.0 and started"}], **extra}


def test_each_host_of_a_failed_multi_host_task_has_its_own_row() -> None:
    results = [ok("h1"), {"host": "h2", "state": "failed", "phase": "failed",
                          "message": "h2 failed@health: 503 — host OUT OF ROTATION", "steps": []},
               ok("h3", skipped=True, detail="already on 2.0.0 and in rotation")]
    t = ti("failed")
    recs = _host_records(t, {(DEPLOY, "r1", t.task_id, 0, HOST_RESULTS): results})
    assert [(r.host, r.state) for r in recs] == [("h1", "success"), ("h2", "failed"),
                                                 ("h3", "success")]
    assert recs[1].failure == "h2 failed@health: 503 — host OUT OF ROTATION"
    assert recs[1].phase == "failed" and recs[1].result is None
    rows = {r.host: r for r in host_rows([("h1", ""), ("h2", ""), ("h3", "")], recs)}
    assert (rows["h1"].version, rows["h3"].version) == ("2.0.0", "2.0.0")
    assert rows["h2"].version != "2.0.0"


def test_hosts_not_finished_take_the_tasks_state() -> None:
    t = ti("running")
    recs = _host_records(t, {(DEPLOY, "r1", t.task_id, 0, HOST_RESULTS): [
        ok("h1"), {"host": "h2", "state": "pending", "steps": []}]})
    assert [(r.host, r.state) for r in recs] == [("h1", "success"), ("h2", "running")]


def test_a_one_host_task_still_reads_its_return_value() -> None:
    t = ti("success")
    [rec] = _host_records(t, {(DEPLOY, "r1", t.task_id, 0, "return_value"): ok("h9")})
    assert (rec.host, rec.state, rec.result and rec.result["version"]) == ("h9", "success", "2.0.0")


def test_each_host_of_a_multi_host_rollback_task_shows_where_it_went_back_to() -> None:
    t = SimpleNamespace(**{**vars(ti("failed")), "task_id": "rollback.hosts"})
    back = {"host": "h1", "state": "restored", "version": "1.0.0", "from": "2.0.0", "moved": True,
            "steps": [{"step": "pull_in", "state": "ok", "seconds": 0.1, "detail": "in rotation"}]}
    recs = _host_records(t, {(DEPLOY, "r1", t.task_id, 0, HOST_RESULTS): [
        back, {"host": "h2", "state": "failed", "message": "health check failed: 503"},
        {**back, "host": "h3", "state": "unchanged", "moved": False}]})
    assert [(r.host, r.state) for r in recs] == [("h1", "success"), ("h2", "failed"),
                                                 ("h3", "success")]
    rows = {r.host: r for r in host_rows([("h1", ""), ("h2", ""), ("h3", "")], recs)}
    assert (rows["h1"].version, rows["h1"].last_result) == ("1.0.0", "restored")
    assert (rows["h2"].last_result, rows["h2"].detail) == ("failed", "health check failed: 503")
    assert rows["h3"].version == "1.0.0"
