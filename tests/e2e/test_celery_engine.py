"""The production engine (issue 15): PostgreSQL 15 + Redis 7 + CeleryExecutor with two
schedulers and two Celery workers — dc1 (queues ``default,dc1``) and dc2 (``default,dc2``) —
beside the dag-processor, triggerer and api-server, all real, on loopback.

The session sandbox's hosts come from its queues inventory: host01-05 in group dc1 (queue
dc1), host06-10 in dc2 (queue dc2). One stack serves the whole module; the faults (a worker
SIGKILLed with every process under it, one of the two schedulers SIGKILLed) reuse the local
engine's fault scenario (tests/e2e/test_faults_killed.py) and expect the same outcomes.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from sandbox import Sandbox
from sandbox.airflow_stack import AirflowStack
from sandbox.localstack import REPO, wired_env
from sandbox.outputs import queues_inventory
from tests.e2e.harness import E2E, demo_config, parse_now, poll, processes_running
from tests.e2e.test_faults_killed import (
    FAULTS, HOLD, HOSTS, OLD, VICTIM, assert_rolled_back, hold_flag, on_known_good_and_up,
    phase_is,
)
from tests.e2e.test_starting import tars

pytestmark = pytest.mark.e2e

DC1 = {f"host{i:02d}" for i in range(1, 6)}
DC2 = {f"host{i:02d}" for i in range(6, 11)}


def queues_inventory_of(sb: Sandbox) -> Path:
    """The sandbox's queues inventory (written by ``up``; made from inventory.yaml for a
    sandbox brought up before it existed)."""
    path = queues_inventory(sb.layout)
    if not path.exists():
        inv = yaml.safe_load(sb.inventory_path.read_text())
        for name, group in inv["groups"].items():
            group["airflow"] = {"queue": name}
        path.write_text(yaml.safe_dump(inv, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def celery(sandbox: Sandbox) -> Iterator[E2E]:
    home = Path(tempfile.mkdtemp(prefix="tars-e2e-celery-"))
    config_dir = home / "configs" / "apps"
    config_dir.mkdir(parents=True)
    shutil.copytree(REPO / "configs" / "templates", config_dir.parent / "templates")
    stack = AirflowStack(home=home, parallelism=16, engine="celery")
    queues_inventory_of(sandbox)
    stack.extra_env.update(wired_env(sandbox, stack))  # TARS_INVENTORY: the queues inventory
    stack.extra_env["TARS_CONFIG_DIR"] = str(config_dir)
    try:
        stack.start()  # PostgreSQL + Redis first; everything stops on a failed start
        yield E2E(sandbox, stack, config_dir)
    finally:
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def cel(celery: E2E, fleet: Sandbox) -> Iterator[E2E]:
    """The celery stack with the fleet reset to 1.0.0, all UP; no run outlives the test, and
    every component runs again afterwards (a test may kill one)."""
    yield celery
    api = celery.api
    for state in ("running", "queued"):
        for run in api.request("GET", "/api/v2/dags/~/dagRuns",
                               params={"state": state, "limit": 100})["dag_runs"]:
            api.request("PATCH", f"/api/v2/dags/{run['dag_id']}/dagRuns/{run['dag_run_id']}",
                        json={"state": "failed"})
    for comp in celery.stack.components:
        if celery.stack.procs[comp].poll() is not None:
            celery.stack.restart(comp)


def add_app(e2e: E2E, name: str, **overrides: Any) -> str:
    """A demo variant on the queues inventory; waits for its deploy DAG."""
    data = demo_config(name, queues_inventory_of(e2e.sandbox), **overrides)
    (e2e.config_dir / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    parse_now(e2e.api)
    dag_id = f"tars_deploy__{name}"
    e2e.wait_dag(dag_id, 120)
    return dag_id


def latest_run(e2e: E2E, dag_id: str) -> dict[str, Any]:
    runs = e2e.api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns",
                           params={"order_by": "-start_date", "limit": 1})["dag_runs"]
    assert runs, f"no run of {dag_id}"
    return dict(runs[0])


def host_tasks(e2e: E2E, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The run's host tasks that ran, each with the host it released (from its XCom)."""
    rows = []
    for ti in e2e.api.task_instances(dag_id, run_id):
        if ".release" not in ti["task_id"] or ti["task_id"].endswith("enter") or \
                ti["state"] not in ("success", "failed"):
            continue
        xcom = e2e.api.request(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}"
                   "/xcomEntries/return_value", params={"map_index": ti["map_index"]})
        rows.append({**ti, "result": xcom["value"]})
    return rows


def hosts_of(result: Any) -> set[str]:
    """Hosts a host task's result names (one host, or several for a multi-host task)."""
    if isinstance(result, dict) and "host" in result:
        return {result["host"]}
    if isinstance(result, dict) and "hosts" in result:
        return {h["host"] if isinstance(h, dict) else h for h in result["hosts"]}
    if isinstance(result, list):
        return {h["host"] for h in result}
    raise AssertionError(f"unexpected host task result: {result!r}")


# ---- 1 + 5: the demo release through `tars deploy --wait`; each datacenter on its worker ----


def test_tars_deploy_wait_releases_the_demo_with_each_datacenter_on_its_own_worker(
        cel: E2E) -> None:
    dag_id = add_app(cel, "demo")
    result = tars(cel, "deploy", "demo", "2.0.0", "--reason", "e2e: celery engine", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "triggered tars_deploy__demo run " in out
    for stage in ("fort: 1/1", "batch_1: 1/1", "batch_2: 2/2", "batch_3: 6/6"):
        assert f"{stage} host(s) done" in out, stage
    last = out.rstrip().splitlines()[-1]
    assert last.endswith("success: succeeded · 10/10 hosts on 2.0.0 · 0 failed (budget 0) · "
                         "brake off"), last
    assert cel.versions() == {h.name: "2.0.0" for h in cel.sandbox.hosts}
    assert set(cel.sandbox.server_states().values()) == {"UP"}

    run_id = latest_run(cel, dag_id)["dag_run_id"]
    ran: dict[str, set[str]] = {"dc1": set(), "dc2": set()}
    for ti in host_tasks(cel, dag_id, run_id):
        hosts = hosts_of(ti["result"])
        dc = "dc1" if hosts <= DC1 else "dc2" if hosts <= DC2 else None
        assert dc, f"{ti['task_id']}[{ti['map_index']}] mixes datacenters: {hosts}"
        assert (ti["queue"], ti["hostname"]) == (dc, dc), \
            f"{ti['task_id']}[{ti['map_index']}] for {hosts}: queue {ti['queue']}, " \
            f"ran on {ti['hostname']}"
        ran[dc] |= hosts
    assert ran == {"dc1": DC1, "dc2": DC2}, ran
    # Each worker loaded Airflow's task runner and the plugins before forking its pool
    # (tars_operators/celery_worker.py): its tasks do not import them again.
    for comp in ("worker-dc1", "worker-dc2"):
        log = (cel.stack.home / "logs" / f"{comp}.out").read_text(errors="replace")
        assert "tars: task runner and plugins preloaded in this worker" in log, comp


# ---- 4: a broken version fails at the fort, rolls back, the run fails with the reason ------


def test_broken_version_fails_at_the_fort_and_rolls_back(cel: E2E) -> None:
    add_app(cel, "demo")
    result = tars(cel, "deploy", "demo", "2.0.0-broken", "--wait")
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stdout.rstrip().splitlines()[-1]
    assert "failed: rolled back: fort: 1 host(s) failed (host01)" in last, last
    assert "fort: 0/1 host(s) done, 1 FAILED" in result.stdout
    run = latest_run(cel, "tars_deploy__demo")
    assert "host01 failed@health" in run["note"] and "503" in run["note"], run["note"]
    assert cel.versions() == {h.name: OLD for h in cel.sandbox.hosts}
    assert set(cel.sandbox.server_states().values()) == {"UP"}
    for host in cel.sandbox.hosts[1:]:
        assert "2.0.0-broken" not in cel.releases_on(host.name), f"{host.name} was touched"


# ---- 2: the dc1 worker SIGKILLed (with its pool and task processes) mid-chain ---------------


def test_worker_killed_mid_chain_rolls_back_and_names_the_host(cel: E2E) -> None:
    dag_id = add_app(cel, "demo_faults", **FAULTS)
    flag = hold_flag(cel, VICTIM)
    flag.write_text("")
    try:
        run_id = cel.api.trigger(dag_id, {"version": "2.0.0", "hosts": HOSTS,
                                          "reason": "e2e: worker killed"})["dag_run_id"]
        poll(lambda: phase_is(cel, VICTIM, run_id, "activating"), 240,
             f"{VICTIM} to reach phase activating", interval=0.1)
        poll(lambda: processes_running(*HOLD), 30, "the activation to hang in its start command",
             interval=0.05)
        killed = cel.stack.kill_tree("worker-dc1")
    finally:
        flag.unlink(missing_ok=True)
    print(f"worker dc1 killed with everything under it: {killed}")
    # The host-side guard saw the controller go: the step's command group is gone.
    poll(lambda: not processes_running(*HOLD), 15, "the killed step's command to end on the host")
    # A dc1 worker comes back (a new machine): the rollback of dc1 hosts needs one.
    cel.stack.restart("worker-dc1")
    run = cel.api.wait(dag_id, run_id, timeout=300)
    print(f"{run['state']}: {run.get('note')}")
    assert_rolled_back(run, VICTIM, "restored to 1.0.0, in rotation")
    on_known_good_and_up(cel, {h: OLD for h in cel.versions()})


# ---- 3: one of the two schedulers SIGKILLed mid-release; the other completes it ------------


def test_one_scheduler_killed_mid_release_the_other_completes_it(cel: E2E) -> None:
    dag_id = add_app(cel, "demo_faults", **FAULTS)
    run_id = cel.api.trigger(dag_id, {"version": "2.0.0-slow", "hosts": HOSTS,
                                      "reason": "e2e: scheduler killed"})["dag_run_id"]
    poll(lambda: phase_is(cel, VICTIM, run_id, "checking"), 240,
         f"{VICTIM} to reach phase checking", interval=0.05)
    code = cel.stack.kill("scheduler")  # not restarted: scheduler-2 carries on alone
    print(f"scheduler killed (exit {code}) while {VICTIM} checks")
    run = cel.api.wait(dag_id, run_id, timeout=300)
    note = run.get("note") or ""
    assert run["state"] == "success", note
    assert note.startswith("succeeded · 3/3 hosts on 2.0.0-slow"), note
    assert cel.stack.procs["scheduler"].poll() is not None, "the killed scheduler came back"
    on_known_good_and_up(cel, {**{h: OLD for h in cel.versions()},
                               **{h: "2.0.0-slow" for h in HOSTS}})
