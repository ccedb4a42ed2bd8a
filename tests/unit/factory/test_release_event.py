"""The release event in the deploy DAG: a teardown after every end, updating tars://<app>."""

from __future__ import annotations

from pathlib import Path

import pytest

from tars_operators.factory.builder import build_dag
from tars_operators.release.events import ApprovalNeeded
from tests.unit.factory.test_dag_shape import spec_for

pytestmark = pytest.mark.unit


def test_release_event_follows_every_end_and_does_not_decide_the_run(tmp_path: Path) -> None:
    dag = build_dag(spec_for(tmp_path))
    task = dag.get_task("release_event")
    assert task.upstream_task_ids == {"finalize", "halt", "abort", "rollback.report"}
    assert task.is_teardown and not task.on_failure_fail_dagrun  # the ends decide the run
    assert [a.uri for a in task.outlets] == ["tars://demo/"]
    assert not task.downstream_task_ids


def test_the_canary_dag_emits_it_too(tmp_path: Path) -> None:
    dag = build_dag(spec_for(tmp_path), canary=True)
    assert [a.uri for a in dag.get_task("release_event").outlets] == ["tars://demo/"]


def test_an_approval_sends_approval_needed_when_it_starts(tmp_path: Path) -> None:
    dag = build_dag(spec_for(tmp_path, approval={"enabled": True, "after": ["fort"],
                                                 "timeout_seconds": 60, "default": "halt"}))
    callbacks = dag.get_task("fort.approve").on_execute_callback
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    assert [type(c) for c in callbacks] == [ApprovalNeeded]
    assert "continue the release after fort" in callbacks[0].question
