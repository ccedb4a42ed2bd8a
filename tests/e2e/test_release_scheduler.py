"""Releases through the real scheduler, dag-processor, triggerer and api-server (issue 6: 1, 2, 6)."""

from __future__ import annotations

import pytest

from tests.e2e.harness import E2E, Load

pytestmark = pytest.mark.e2e


def test_happy_path_every_host_new_version_and_zero_failed_requests(e2e: E2E) -> None:
    dag_id = e2e.add_app("demo")
    with Load(e2e.sandbox.frontend_url + "/", rate=50) as load:
        run = e2e.release(dag_id, {"version": "2.0.0", "reason": "e2e happy path",
                                   "ticket": "E2E-1"})
    print(f"\nthrough HAProxy during the release: {load.ok} requests ok, {load.failed} failed")
    assert run["state"] == "success", run.get("note")
    assert e2e.versions() == {h.name: "2.0.0" for h in e2e.sandbox.hosts}
    assert set(e2e.sandbox.server_states().values()) == {"UP"}
    assert run["note"].startswith("succeeded · 10/10 hosts on 2.0.0 · 0 failed"), run["note"]
    assert "ticket E2E-1" in run["note"]
    assert load.failed == 0, f"{load.failed} failed requests: {load.errors[:5]}"
    assert load.ok > 200, "the load generator did not run during the release"
    states = e2e.task_states(dag_id, run["dag_run_id"])
    assert states["rollback.plan"] == "skipped" and states["halt"] == "skipped"
    names = [h.name for h in e2e.sandbox.hosts]
    # The UI names hosts, not indexes: one task per host up to 3 hosts, then a task's hosts
    # (batch_3's 6 hosts: 2 tasks of 3, strategy.hosts_per_task auto).
    by_stage: dict[str, set[str]] = {}
    for t in e2e.api.task_instances(dag_id, run["dag_run_id"]):
        if t["task_id"].endswith(".release"):
            by_stage.setdefault(t["task_id"], set()).add(t["rendered_map_index"])
    assert by_stage == {"fort.release": {names[0]}, "batch_1.release": {names[1]},
                        "batch_2.release": set(names[2:4]),
                        "batch_3.release": {f"{names[4]} … {names[6]} (3 hosts)",
                                            f"{names[7]} … {names[9]} (3 hosts)"}}, by_stage


def test_broken_version_rolls_back_the_fort_host_only(e2e: E2E) -> None:
    dag_id = e2e.add_app("demo")
    fort = e2e.sandbox.hosts[0].name
    run = e2e.release(dag_id, {"version": "2.0.0-broken", "reason": "e2e broken build"})
    assert run["state"] == "failed"
    note = run["note"]
    assert note.startswith("rolled back: fort: 1 host(s) failed"), note
    assert f"{fort} failed@health" in note and "503" in note, note
    assert e2e.versions() == {h.name: "1.0.0" for h in e2e.sandbox.hosts}
    assert set(e2e.sandbox.server_states().values()) == {"UP"}
    for host in e2e.sandbox.hosts[1:]:
        assert "2.0.0-broken" not in e2e.releases_on(host.name), f"{host.name} was touched"
    states = e2e.task_states(dag_id, run["dag_run_id"])
    assert states["fort.release[0]"] == "failed"
    assert states["rollback.hosts[0]"] == "success"
    assert states["batch_1.enter"] == "skipped" and states["finalize"] == "skipped"


def test_going_back_to_a_still_staged_release_needs_no_upload(e2e: E2E) -> None:
    dag_id = e2e.add_app("demo_back", **{"strategy.batches": [1, 2, "100%"]})
    hosts = [h.name for h in e2e.sandbox.hosts[:2]]
    run = e2e.release(dag_id, {"version": "2.0.0", "hosts": hosts})
    assert run["state"] == "success", run.get("note")
    back = e2e.release(dag_id, {"version": "1.0.0", "hosts": hosts, "reason": "e2e: go back"})
    assert back["state"] == "success", back.get("note")
    assert {h: e2e.sandbox.served_version(h) for h in hosts} == dict.fromkeys(hosts, "1.0.0")
    result = e2e.api.request(
        "GET", f"/api/v2/dags/{dag_id}/dagRuns/{back['dag_run_id']}/taskInstances/fort.release"
               "/xcomEntries/return_value", params={"map_index": 0})["value"]
    stage = next(s for s in result["steps"] if s["step"] == "stage")
    assert stage["state"] == "unchanged", stage  # already on the host: nothing sent, nothing unpacked
