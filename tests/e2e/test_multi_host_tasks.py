"""Several hosts per release task (``strategy.hosts_per_task``) under the real services.

The session fleet's 10 hosts in one stage, 5 hosts per task (two task instances), one host at a
time in each: a brake pulled while the first hosts are released holds the hosts their tasks
have not started (untouched, the tasks wait in the triggerer), and releasing it finishes the
stage; a host that fails makes its task fail, and clearing that task re-runs only that host
(the others are reported skipped, never pulled out again).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.harness import E2E, poll
from tests.e2e.test_release_control import (
    OLD, assert_untouched, brake, has_release, names, release_brake, trigger,
)

pytestmark = pytest.mark.e2e
TASK = "batch_1.release"


def multi(**overrides: Any) -> dict[str, Any]:
    """One stage of every host, 5 per task, one at a time in each task."""
    return {"strategy.fort": 0, "strategy.batches": ["100%"], "strategy.hosts_per_task": 5,
            "strategy.parallel": 2, "traffic.min_in_service": 0, **overrides}


def host_results(e2e: E2E, dag_id: str, run_id: str, map_index: int) -> list[dict[str, Any]]:
    entry = e2e.api.request(
        "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{TASK}/xcomEntries/"
               f"host_results", params={"map_index": map_index, "deserialize": True})
    value = entry["value"]
    return value if isinstance(value, list) else []


def task_states(e2e: E2E, dag_id: str, run_id: str) -> dict[int, str]:
    return {t["map_index"]: t["state"] for t in e2e.api.task_instances(dag_id, run_id)
            if t["task_id"] == TASK}


def test_a_brake_pulled_mid_stage_holds_the_hosts_a_task_has_not_started(e2e: E2E) -> None:
    app = "demo_multi_brake"
    dag_id = e2e.add_app(app, **multi())
    release_brake(e2e, app)
    run_id = trigger(e2e, dag_id, 10, version="2.0.0-slow", reason="e2e multi-host brake")
    # Each task starts with its first host (host01, host06); the slow build takes ≥ 4 s there.
    poll(lambda: has_release(e2e, "host01", "2.0.0-slow") and has_release(e2e, "host06",
                                                                           "2.0.0-slow"),
         240, "both tasks to start their first host", interval=0.1)
    try:
        brake(e2e, app, "POST", reason="e2e: alarm mid-stage", action="hold")
        poll(lambda: set(task_states(e2e, dag_id, run_id).values()) == {"deferred"}, 120,
             "both multi-host tasks to wait for the brake")
        labels = {t["map_index"]: t.get("rendered_map_index") for t in
                  e2e.api.task_instances(dag_id, run_id) if t["task_id"] == TASK}
        assert labels == {0: "host01 … host05 (5 hosts)", 1: "host06 … host10 (5 hosts)"}
        # The hosts started before the brake finished; the rest were never touched.
        for i, first in ((0, "host01"), (1, "host06")):
            results = host_results(e2e, dag_id, run_id, i)
            assert [r["host"] for r in results] == names(e2e, 10)[5 * i:5 * i + 5]
            done = [r["host"] for r in results if r["state"] == "ok"]
            assert done[:1] == [first], results
            held = [r["host"] for r in results if r["state"] == "pending"]
            assert len(held) >= 3, results
            assert_untouched(e2e, held, "2.0.0-slow")
            for h in done:
                assert e2e.sandbox.served_version(h) == "2.0.0-slow"
                assert e2e.sandbox.server_states()[h] == "UP"
        assert e2e.api.run(dag_id, run_id)["state"] == "running"
    finally:
        release_brake(e2e, app)
    run = e2e.api.wait(dag_id, run_id, timeout=300)
    assert run["state"] == "success", run["note"]
    assert run["note"].startswith("succeeded · 10/10 hosts on 2.0.0-slow"), run["note"]
    assert set(e2e.versions().values()) == {"2.0.0-slow"}
    assert set(e2e.sandbox.server_states().values()) == {"UP"}
    for i in (0, 1):
        results = host_results(e2e, dag_id, run_id, i)
        assert [r["state"] for r in results] == ["ok"] * 5
        assert all(r["phases"][-1] == "in rotation" and r["steps"] for r in results)
    # The release tab shows one row per host, not per task.
    view = e2e.api.request("GET", f"/tars/apps/{app}/runs/{dag_id}/{run_id}")
    rows = {h["host"]: h for h in view["hosts"] if h["stage"] == "batch_1"}
    assert sorted(rows) == names(e2e, 10), view["hosts"]
    for row in rows.values():
        assert (row["state"], row["result"], row["phase"]) == ("success", "ok", "in rotation"), row
        assert [s["step"] for s in row["steps"]][:3] == ["stage", "pull_out", "activate"], row


def test_clearing_a_failed_multi_host_task_reruns_only_its_failed_host(e2e: E2E) -> None:
    app = "demo_multi_retry"
    dag_id = e2e.add_app(app, **multi(**{"strategy.on_failure": "halt"}))
    bad = "host03"
    e2e.sandbox.block_ssh(bad)
    try:
        run = e2e.release(dag_id, {"version": "2.0.0", "reason": "e2e multi-host retry",
                                   "hosts": names(e2e, 10)})
        run_id = run["dag_run_id"]
        assert run["state"] == "failed", run["note"]
        assert run["note"].startswith("halted: batch_1: 1 host(s) failed (host03)"), run["note"]
        assert f"{bad} failed@stage: cannot connect" in run["note"], run["note"]
        first = host_results(e2e, dag_id, run_id, 0)
        assert [r["state"] for r in first] == ["ok", "ok", "failed", "ok", "ok"]
        assert first[2]["message"].startswith(f"{bad} failed@stage"), first[2]
        assert e2e.sandbox.served_version(bad) == OLD
        assert e2e.sandbox.server_states()[bad] == "UP"  # never pulled out
        tries = {(t["task_id"], t["map_index"]): t["try_number"]
                 for t in e2e.api.task_instances(dag_id, run_id)}
    finally:
        e2e.sandbox.unblock_ssh(bad)
    e2e.api.request("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", json={
        "dry_run": False, "dag_run_id": run_id, "task_ids": [[TASK, 0]],
        "include_downstream": True, "only_failed": False, "reset_dag_runs": True,
    })
    run = e2e.api.wait(dag_id, run_id, timeout=300)
    assert run["state"] == "success", run["note"]
    assert run["note"].startswith("succeeded · 10/10 hosts on 2.0.0 · 0 failed"), run["note"]
    assert set(e2e.versions().values()) == {"2.0.0"}
    assert set(e2e.sandbox.server_states().values()) == {"UP"}
    again = host_results(e2e, dag_id, run_id, 0)
    by_host = {r["host"]: r for r in again}
    assert by_host[bad]["state"] == "ok" and not by_host[bad].get("skipped")
    assert by_host[bad]["phases"][-1] == "in rotation" and by_host[bad]["steps"]
    for h in ("host01", "host02", "host04", "host05"):
        assert by_host[h]["state"] == "ok" and by_host[h]["skipped"] is True, by_host[h]
        assert by_host[h]["steps"] == [], by_host[h]  # nothing done to it again
    view = e2e.api.request("GET", f"/tars/apps/{app}/runs/{dag_id}/{run_id}")
    rows = {h["host"]: h for h in view["hosts"] if h["stage"] == "batch_1"}
    assert (rows[bad]["state"], rows[bad]["failure"]) == ("success", "")
    assert all(r["state"] == "success" and r["phase"] == "in rotation" for r in rows.values())
    after = {(t["task_id"], t["map_index"]): t["try_number"]
             for t in e2e.api.task_instances(dag_id, run_id)}
    assert after[(TASK, 0)] == tries[(TASK, 0)] + 1
    assert after[(TASK, 1)] == tries[(TASK, 1)], "the task without a failure ran again"


def test_a_broken_release_rolls_back_in_multi_host_tasks(e2e: E2E) -> None:
    """Eight hosts fail health on a broken build; the rollback restores them four per task."""
    app = "demo_multi_rollback"
    dag_id = e2e.add_app(app, **multi(**{"strategy.hosts_per_task": 4, "strategy.parallel": 8}))
    hosts = names(e2e, 8)
    run = e2e.release(dag_id, {"version": "2.0.0-broken", "reason": "e2e multi-host rollback",
                               "hosts": hosts}, timeout=420)
    run_id, note = run["dag_run_id"], run["note"] or ""
    assert run["state"] == "failed", note
    assert note.startswith("rolled back: batch_1: 8 host(s) failed"), note
    assert "8/8 touched host(s) on a good release and UP" in note, note
    # every touched host back on the old release and in rotation; the others never touched
    assert {h: e2e.sandbox.served_version(h) for h in hosts} == dict.fromkeys(hosts, OLD)
    assert set(e2e.sandbox.server_states().values()) == {"UP"}
    assert_untouched(e2e, names(e2e, 10)[8:], "2.0.0-broken")
    rollback = {t["map_index"]: (t["state"], t.get("rendered_map_index"))
                for t in e2e.api.task_instances(dag_id, run_id) if t["task_id"] == "rollback.hosts"}
    assert rollback == {0: ("success", "host01 … host04 (4 hosts)"),
                        1: ("success", "host05 … host08 (4 hosts)")}
    for i in (0, 1):
        entry = e2e.api.request(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/rollback.hosts/"
                   "xcomEntries/host_results", params={"map_index": i, "deserialize": True})
        results = entry["value"]
        assert [r["host"] for r in results] == hosts[4 * i:4 * i + 4]
        assert {(r["state"], r["version"]) for r in results} == {("restored", OLD)}, results
    # the release tab shows each rolled-back host on its own row
    view = e2e.api.request("GET", f"/tars/apps/{app}/runs/{dag_id}/{run_id}")
    rows = {h["host"]: h for h in view["hosts"] if h["stage"] == "rollback"}
    assert sorted(rows) == hosts, view["hosts"]
    assert {(r["state"], r["result"]) for r in rows.values()} == {("success", "restored")}, rows
