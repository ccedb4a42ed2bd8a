"""``tars assemble`` against a fake Airflow API: what it triggers, and its exit codes."""

from __future__ import annotations

import json

import pytest

from tests.unit.client.conftest import FakeAirflow, form, ti
from tests.unit.client.test_commands import run

pytestmark = pytest.mark.unit
ASSEMBLE_FORM = ("hosts", "dry_run", "install", "version", "reason")


@pytest.fixture
def assemble_dag(fake: FakeAirflow) -> FakeAirflow:
    fake.dags["tars_assemble__demo"] = {"dag_id": "tars_assemble__demo", "is_paused": False,
                                        "params": form(*ASSEMBLE_FORM)}
    return fake


def test_assemble_triggers_the_app_assemble_dag_and_waits(assemble_dag: FakeAirflow, capsys) -> None:
    assemble_dag.steps = [({"state": "success", "note": "assembled: host11\n\n- host11: 3 changed; "
                                                        "ready"}, [ti("assemble", "success")])]
    code, out, _ = run(capsys, "assemble", "demo", "--hosts", "host11", "--install", "--reason",
                       "new machine", "--wait")
    assert code == 0, out
    conf = json.loads(assemble_dag.calls("POST", r".*/tars_assemble__demo/dagRuns")[0].content)
    assert conf["conf"] == {"reason": "new machine", "dry_run": False, "install": True,
                            "hosts": ["host11"]}
    assert "host11: 3 changed; ready" in out


def test_a_failed_assembly_exits_1_and_an_app_without_runtime_exits_2(
        assemble_dag: FakeAirflow, capsys) -> None:
    assemble_dag.steps = [({"state": "failed", "note": "host11: not ready"},
                           [ti("assemble", "failed")])]
    code, out, _ = run(capsys, "assemble", "demo", "--dry-run", "--reason", "r", "--wait")
    assert code == 1 and "host11: not ready" in out
    code, _, err = run(capsys, "assemble", "shop", "--reason", "r")
    assert code == 2 and "tars_assemble__shop" in err
