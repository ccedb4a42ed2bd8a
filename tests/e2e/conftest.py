"""The real Airflow services (api-server, scheduler, dag-processor, triggerer) for e2e tests.

Started once per session on free loopback ports with a fresh SQLite home and a preset user,
wired to the session sandbox; stopped at the end even on failure.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from sandbox import Sandbox
from sandbox.airflow_stack import AirflowStack
from sandbox.localstack import wired_env
from tests.e2e.harness import E2E

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def e2e_stack(sandbox: Sandbox) -> Iterator[E2E]:
    home = Path(tempfile.mkdtemp(prefix="tars-e2e-af-"))
    config_dir = home / "configs" / "apps"
    config_dir.mkdir(parents=True)
    # A config repository like configs/: templates beside apps/ (sources stay inside it).
    shutil.copytree(REPO / "configs" / "templates", config_dir.parent / "templates")
    stack = AirflowStack(home=home, parallelism=16)
    stack.extra_env.update(wired_env(sandbox, stack))
    stack.extra_env["TARS_CONFIG_DIR"] = str(config_dir)
    stack.start()
    try:
        yield E2E(sandbox, stack, config_dir)
    finally:
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def e2e(e2e_stack: E2E, fleet: Sandbox) -> Iterator[E2E]:
    """The stack with the fleet reset to 1.0.0, all UP; no run of a test outlives it."""
    yield e2e_stack
    end_of_test(e2e_stack)


def end_of_test(e2e: E2E) -> None:
    """After a test: a component that died is started again and fails the test that saw it
    die (not every test after it, one timeout at a time); no run of the test outlives it."""
    died = e2e.stack.revive()
    stop_unfinished_runs(e2e)
    if died:
        pytest.fail("airflow component(s) died during this test (started again): "
                    + "\n".join(f"{c}: {why}" for c, why in died.items()))


def stop_unfinished_runs(e2e: E2E) -> None:
    """Fail runs a test left running or queued, so they cannot touch hosts after it."""
    api = e2e.api
    for state in ("running", "queued"):
        runs = api.request("GET", "/api/v2/dags/~/dagRuns", params={"state": state,
                                                                    "limit": 100})["dag_runs"]
        for run in runs:
            api.request("PATCH", f"/api/v2/dags/{run['dag_id']}/dagRuns/{run['dag_run_id']}",
                        json={"state": "failed"})
