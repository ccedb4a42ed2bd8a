"""Progress lines from run snapshots (pure), and the client's independence from Airflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tars_operators.client.progress import changes, outcome, snapshot, stage_name
from tars_operators.release.machine import (
    PREPARE, ROLLBACK_HOSTS, ROLLBACK_PLAN, approve_id, gate_id, release_id,
)
from tests.unit.client.conftest import ti

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]


def test_stage_names() -> None:
    assert stage_name("batch_2.release") == "batch_2"
    assert stage_name("rollback.hosts") == "rollback"
    assert stage_name("restore") == "restore"


def test_task_ids_are_the_machines() -> None:
    """The ids the DAG is built with (release/machine) are the ids progress recognises."""
    snap = snapshot({"state": "running"}, [
        ti(release_id("batch_3"), "success", 0), ti(ROLLBACK_HOSTS, "running", 0),
        ti(gate_id("batch_3"), "deferred"), ti(ROLLBACK_PLAN, "deferred"),
        ti(PREPARE, "deferred"), ti(approve_id("batch_3"), "awaiting_input")])
    assert [s.name for s in snap.stages] == ["batch_3", "rollback"]
    assert snap.braked_at == ("batch_3.gate",) and snap.waiting_window
    assert "awaiting approval after batch_3" in changes(None, snap)


def test_first_snapshot_says_everything() -> None:
    snap = snapshot({"state": "running", "note": "waiting for deploy window: outside\n\nby x"},
                    [ti("prepare", "deferred")])
    assert changes(None, snap) == [
        "run running", "waiting for deploy window: outside",
        "waiting for the deploy window (deferred: no worker slot is held)",
    ]


def test_only_what_moved_is_printed() -> None:
    a = snapshot({"state": "running", "note": "planned"},
                 [ti("fort.release", "running", 0), ti("fort.release", "queued", 1)])
    b = snapshot({"state": "running", "note": "planned"},
                 [ti("fort.release", "success", 0), ti("fort.release", "running", 1)])
    assert changes(a, a) == []
    assert changes(a, b) == ["fort: 1/2 host(s) done, 1 in progress"]
    c = snapshot({"state": "running", "note": "fort · 1/2"},
                 [ti("fort.release", "success", 0), ti("fort.release", "failed", 1),
                  ti("fort.approve", "awaiting_input")])
    assert changes(b, c, approve_hint="tars approve demo r1") == [
        "fort · 1/2", "fort: 1/2 host(s) done, 1 FAILED",
        "awaiting approval after fort: tars approve demo r1",
    ]


def test_stages_in_release_order() -> None:
    snap = snapshot({"state": "failed"}, [
        ti("rollback.hosts", "success", 0), ti("batch_10.release", "success", 0),
        ti("batch_2.release", "success", 0), ti("fort.release", "failed", 0)])
    assert [s.name for s in snap.stages] == ["fort", "batch_2", "batch_10", "rollback"]


def test_brake_hold_is_shown() -> None:
    snap = snapshot({"state": "running"}, [ti("batch_1.gate", "deferred")])
    assert "brake pulled: holding at batch_1.gate until it is released" in changes(None, snap)


def test_outcomes() -> None:
    ok = snapshot({"state": "success", "note": "succeeded · 10/10"}, [])
    assert outcome(ok) == (0, "success: succeeded · 10/10")
    refused = snapshot({"state": "failed", "note": "refused before any host was touched: x"}, [])
    assert outcome(refused) == (1, "failed: refused before any host was touched: x")
    bare = snapshot({"state": "failed", "note": None}, [ti("fetch", "failed")])
    assert outcome(bare) == (1, "failed: failed tasks: fetch")


def test_client_never_imports_airflow() -> None:
    """CI jobs install httpx only: the commands must load and run --help without Airflow."""
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'airflow' or name.startswith('airflow.'):\n"
        "            raise ImportError('airflow is not installed here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from tars_operators.cli import main\n"
        "import tars_operators.client.commands\n"
        "try:\n"
        "    main(['deploy', '--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('airflow', 'pydantic')]\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True,
                            cwd=REPO, env={"PYTHONPATH": str(REPO / "plugins")})
    assert result.returncode == 0, result.stderr
    assert "--force REASON" in result.stdout and result.stdout.rstrip().endswith("ok")


def test_a_failed_task_of_several_hosts_is_not_counted_as_all_failed() -> None:
    # 50 hosts in two tasks of 25 (strategy.hosts_per_task): one task failed on a single host.
    # The API shows task states only: its 25 hosts are not "25 FAILED"; the note names the one.
    def many(state: str, i: int) -> dict:
        return {**ti("batch_3.release", state, i), "rendered_map_index": "h1…h25 (25 hosts)"}

    snap = snapshot({"state": "failed"}, [many("success", 0), many("failed", 1)])
    (stage,) = snap.stages
    assert (stage.done, stage.failed, stage.unsure, stage.finished) == (25, 0, 25, True)
    assert stage.line() == ("batch_3: 25/50 host(s) done, 25 in failed multi-host task(s) "
                            "(the run note names the hosts that failed)")


def test_hosts_whose_task_never_started_are_not_failed() -> None:
    snap = snapshot({"state": "failed"}, [ti("batch_1.release", "upstream_failed", 0),
                                          ti("batch_1.release", "upstream_failed", 1)])
    assert snap.stages[0].line() == "batch_1: 0/2 host(s) done, 2 never started"
