"""Waits that hold no worker slot: a slow health check and a brake pulled before a host."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.harness import E2E, poll

pytestmark = pytest.mark.e2e


def seen_states(e2e: E2E, dag_id: str, run_id: str, log: list) -> Any:
    def record(run: dict, tis: list[dict]) -> None:
        log.extend((t["task_id"], t["map_index"], t["state"]) for t in tis)
    return e2e.api.wait(dag_id, run_id, timeout=240, poll=0.3, on_change=record)


def test_slow_health_moves_to_the_triggerer_and_the_host_completes(e2e: E2E) -> None:
    # 2.0.0-slow listens after ~4 s; after 1 s inline the wait goes to the triggerer.
    dag_id = e2e.add_app("demo_defer", **{"steps.health_defer_after": 1,
                                           "strategy.batches": [1, 2, "100%"]})
    hosts = [h.name for h in e2e.sandbox.hosts[:2]]
    run = e2e.api.trigger(dag_id, {"version": "2.0.0-slow", "hosts": hosts,
                                   "reason": "e2e: slow start"})
    log: list = []
    final = seen_states(e2e, dag_id, run["dag_run_id"], log)
    assert final["state"] == "success", final.get("note")
    assert ("fort.release", 0, "deferred") in log, "the health wait never left the worker"
    assert {h: e2e.sandbox.served_version(h) for h in hosts} == dict.fromkeys(hosts, "2.0.0-slow")
    assert all(e2e.sandbox.server_states()[h] == "UP" for h in hosts)
    result = e2e.api.request(
        "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances/fort.release"
               "/xcomEntries/return_value", params={"map_index": 0})["value"]
    steps = [s["step"] for s in result["steps"]]
    assert steps[:4] == ["stage", "pull_out", "activate", "health"] and "pull_in" in steps


def test_brake_pulled_before_a_host_starts_holds_it_untouched_until_released(e2e: E2E) -> None:
    dag_id = e2e.add_app("demo_brake_first", **{"strategy.batches": [1, 2, "100%"]})
    app = "demo_brake_first"
    fort = e2e.sandbox.hosts[0].name
    e2e.api.request("POST", f"/tars/apps/{app}/brake", json={"reason": "e2e: hold first"})
    try:
        run = e2e.api.trigger(dag_id, {"version": "2.0.0", "hosts": [fort, e2e.sandbox.hosts[1].name]})
        run_id = run["dag_run_id"]

        def fort_waits() -> bool:
            tis = e2e.api.task_instances(dag_id, run_id)
            return any(t["task_id"] == "fort.release" and t["state"] == "deferred" for t in tis)

        poll(fort_waits, 120, "the fort host task to wait for the brake")
        assert "2.0.0" not in e2e.releases_on(fort), "a braked release touched the host"
        assert e2e.api.run(dag_id, run_id)["state"] == "running"
    finally:
        e2e.api.request("DELETE", f"/tars/apps/{app}/brake", params={"reason": "e2e: go"})
    final = e2e.api.wait(dag_id, run_id, timeout=240)
    assert final["state"] == "success", final.get("note")
    assert e2e.sandbox.served_version(fort) == "2.0.0"


def test_bake_between_stages_waits_in_the_triggerer(e2e: E2E) -> None:
    dag_id = e2e.add_app("demo_bake", **{"strategy.bake_seconds": 4,
                                         "strategy.batches": [1, 2, "100%"]})
    hosts = [h.name for h in e2e.sandbox.hosts[:2]]
    run = e2e.api.trigger(dag_id, {"version": "2.0.0", "hosts": hosts})
    log: list = []
    final = seen_states(e2e, dag_id, run["dag_run_id"], log)
    assert final["state"] == "success", final.get("note")
    assert ("fort.bake", -1, "deferred") in log
    tis = {t["task_id"]: t for t in e2e.api.task_instances(dag_id, run["dag_run_id"])}
    bake = tis["fort.bake"]
    assert bake["state"] == "success"
    from datetime import datetime

    def at(s: str) -> float:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

    # the next stage started only after the bake time passed since the fort gate decided
    assert at(tis["batch_1.enter"]["start_date"]) - at(tis["fort.gate"]["end_date"]) >= 4


def test_dry_run_plans_and_touches_no_host(e2e: E2E) -> None:
    dag_id = e2e.add_app("demo")
    run = e2e.release(dag_id, {"version": "2.0.0", "dry_run": True, "reason": "e2e: preview"})
    assert run["state"] == "success", run.get("note")
    assert run["note"].startswith("dry run: 10 hosts → 2.0.0 (fort: 1, batch_1: 1, batch_2: 2, "
                                  "batch_3: 6)"), run["note"]
    states = e2e.task_states(dag_id, run["dag_run_id"])
    assert states["dry_run"] == "success" and states["fetch"] == "skipped"
    assert all(v == "skipped" for k, v in states.items() if k.startswith(("fort.", "batch_")))
    for host in e2e.sandbox.hosts:
        assert e2e.releases_on(host.name) == ["1.0.0"], f"{host.name} was touched"


def test_three_releases_with_every_health_wait_deferred_all_succeed(e2e: E2E) -> None:
    """apache/airflow#71580/#72716: a task resumed within seconds of its deferral can be failed
    by the executor's stale success. Three releases of 10 hosts, every health wait deferred
    (9 at once in the second stage): none may fail (the trigger's resume guard)."""
    # One host per task (the 9-host stage would otherwise share tasks, whose health waits
    # run inline): this is about nine deferred tasks resuming at once (27 resumes in all).
    dag_id = e2e.add_app("demo_defer10", **{"steps.health_defer_after": 1,
                                             "strategy.hosts_per_task": 1,
                                             "strategy.batches": ["100%"],
                                             "traffic.min_in_service": "10%"})
    outcomes = []
    for i in range(3):
        if i:
            e2e.sandbox.reset()  # every host back on 1.0.0, UP
        log: list = []
        run = e2e.api.trigger(dag_id, {"version": "2.0.0-slow", "reason": f"e2e: deferral {i}"})
        final = seen_states(e2e, dag_id, run["dag_run_id"], log)
        seen = {(t, m) for t, m, s in log if s == "deferred"}  # polled: a short one is missed
        waited = waited_in_triggerer(e2e, dag_id, run["dag_run_id"])
        outcomes.append((final["state"], len(waited), len(seen),
                         (final.get("note") or "").splitlines()[0]))
        print(f"run {i}: {outcomes[-1]}")
        assert final["state"] == "success", (i, final.get("note"))
        assert e2e.versions() == {h.name: "2.0.0-slow" for h in e2e.sandbox.hosts}
        assert set(e2e.sandbox.server_states().values()) == {"UP"}
    assert all(n >= 5 for _, n, _, _ in outcomes), f"health waits were not deferred: {outcomes}"


def waited_in_triggerer(e2e: E2E, dag_id: str, run_id: str) -> set[str]:
    """Hosts whose health step says it came back from the triggerer (each host task's result:
    the host's own record, not a state a poll may miss)."""
    hosts = set()
    for ti in e2e.api.task_instances(dag_id, run_id):
        if not ti["task_id"].endswith(".release") or ti["state"] != "success":
            continue
        result = e2e.api.request(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}"
                   "/xcomEntries/return_value", params={"map_index": ti["map_index"]})["value"]
        if any(s["step"] == "health" and "waited in the triggerer" in s["detail"]
               for s in result["steps"]):
            hosts.add(result["host"])
    return hosts
