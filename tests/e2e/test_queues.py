"""``airflow.queue`` per inventory group: one release task per queue, run for real (LocalExecutor
runs every queue; the Celery engine's own tests check which worker ran what)."""

from __future__ import annotations

import pytest

from tests.e2e.harness import E2E

pytestmark = pytest.mark.e2e
QUEUES = {"hosts.groups": {"dc1": {"airflow": {"queue": "dc1"}},
                           "dc2": {"airflow": {"queue": "dc2"}}}}


def test_hosts_on_two_queues_release_and_roll_back_per_queue(e2e: E2E) -> None:
    # One task per host, so each host's queue is read from its own task (the Celery engine's
    # tests check multi-host tasks never mix datacenters).
    dag_id = e2e.add_app("queues", **QUEUES, **{"strategy.hosts_per_task": 1})
    group = {h.name: h.group for h in e2e.sandbox.hosts}
    fort = e2e.sandbox.hosts[0].name
    api = e2e.api

    broken = e2e.release(dag_id, {"version": "2.0.0-broken", "reason": "e2e queues broken"})
    assert broken["state"] == "failed"
    assert broken["note"].startswith("rolled back: fort: 1 host(s) failed"), broken["note"]
    assert f"{fort} failed@health" in broken["note"], broken["note"]
    states = e2e.task_states(dag_id, broken["dag_run_id"])
    q = group[fort]
    assert states[f"fort.release.{q}[0]"] == "failed"
    assert states[f"rollback.hosts.{q}[0]"] == "success"
    other = "dc2" if q == "dc1" else "dc1"
    assert states[f"rollback.hosts.{other}"] == "skipped"  # no touched host on that queue
    assert states["rollback.report"] == "failed"  # ran, and says what it did
    assert e2e.versions() == {h.name: "1.0.0" for h in e2e.sandbox.hosts}

    run = e2e.release(dag_id, {"version": "2.0.0", "reason": "e2e queues"})
    assert run["state"] == "success", run.get("note")
    assert run["note"].startswith("succeeded · 10/10 hosts on 2.0.0 · 0 failed"), run["note"]
    assert e2e.versions() == {h.name: "2.0.0" for h in e2e.sandbox.hosts}
    assert set(e2e.sandbox.server_states().values()) == {"UP"}
    ran = {}
    for ti in api.task_instances(dag_id, run["dag_run_id"]):
        if ".release." in ti["task_id"] and ti["map_index"] >= 0:
            ran[ti["rendered_map_index"]] = (ti["task_id"].rsplit(".", 1)[1], ti["queue"])
        elif ti["task_id"] in ("prepare", "fort.gate", "finalize"):
            assert ti["queue"] == "default", ti
    assert ran == {h: (g, g) for h, g in group.items()}  # each host on its group's queue
