"""A team's own DAG built from Tars's stage operators releases one host, under the real scheduler.

The stack is this module's own, with a dags folder holding only a copy of the example
``configs/examples/custom_pipeline.py`` (what a team does with it) and a config directory with
the demo app wired to the session sandbox.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from sandbox import Sandbox
from sandbox.airflow_stack import AirflowStack
from sandbox.localstack import wired_env
from tests.e2e.harness import E2E, demo_config

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "custom_pipeline__demo"
STAGES = ["fetch", "stage", "pull_out", "activate", "health", "smoke", "mark_good", "pull_in", "prune"]


@pytest.fixture(scope="module")
def stack(sandbox: Sandbox) -> Iterator[E2E]:
    home = Path(tempfile.mkdtemp(prefix="tars-e2e-custom-"))
    config_dir = home / "configs" / "apps"
    config_dir.mkdir(parents=True)
    shutil.copytree(REPO / "configs" / "templates", config_dir.parent / "templates")
    (config_dir / "demo.yaml").write_text(
        yaml.safe_dump(demo_config("demo", sandbox.inventory_path), sort_keys=False))
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(REPO / "configs" / "examples" / "custom_pipeline.py", dags)
    st = AirflowStack(home=home / "airflow", parallelism=4, dags_folder=dags)
    st.extra_env.update(wired_env(sandbox, st))
    st.extra_env["TARS_CONFIG_DIR"] = str(config_dir)
    try:
        st.start()
        e2e = E2E(sandbox, st, config_dir)
        e2e.wait_dag(DAG_ID)
        yield e2e
    finally:
        st.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_the_stage_operators_release_one_host_and_leave_the_others_alone(stack: E2E, fleet: Sandbox) -> None:
    before = stack.versions()
    assert before["host03"] == "1.0.0"
    run = stack.release(DAG_ID, {"version": "2.0.0", "host": "host03"}, timeout=300)
    states = stack.task_states(DAG_ID, run["dag_run_id"])
    assert run["state"] == "success", states
    assert {task: states[task] for task in STAGES} == {task: "success" for task in STAGES}
    after = stack.versions()
    assert after["host03"] == "2.0.0"  # what the host serves
    assert {h: v for h, v in after.items() if h != "host03"} == {h: v for h, v in before.items() if h != "host03"}
    assert fleet.server_states()["host03"] == "UP"  # back in rotation, as HAProxy reports it
    assert set(fleet.server_states().values()) == {"UP"}
    assert "2.0.0" in stack.releases_on("host03")


def test_a_broken_build_fails_at_its_health_sensor_out_of_rotation(stack: E2E, fleet: Sandbox) -> None:
    run = stack.release(DAG_ID, {"version": "2.0.0-broken", "host": "host04"}, timeout=300)
    states = stack.task_states(DAG_ID, run["dag_run_id"])
    assert run["state"] == "failed", states
    assert states["pull_out"] == "success" and states["health"] == "failed", states
    assert states["mark_good"] != "success" and states["pull_in"] != "success"
    # Left where the failed task left it: out of rotation, the others serving untouched.
    assert fleet.server_states()["host04"] != "UP"
    assert {h for h, s in fleet.server_states().items() if s == "UP"} == {
        h.name for h in fleet.hosts if h.name != "host04"}
