"""Canary analysis and the DAG: the bake is the window inside the gate; an approval asked only
for an inconclusive verdict sits after the analysed stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tars_operators.config.loader import load_app
from tars_operators.factory.builder import build_dag
from tests.unit.factory.test_dag_shape import edges, spec_for

pytestmark = pytest.mark.unit

METRIC = {"name": "5xx ratio", "lb": "5xx_ratio", "max_ratio_vs_baseline": 2}


def with_analysis(tmp_path: Path, analysis: dict[str, Any], **strategy: object) -> Any:
    path = spec_for(tmp_path, **strategy).source
    data = yaml.safe_load(path.read_text())
    data["analysis"] = {"enabled": True, "metrics": [METRIC], **analysis}
    path.write_text(yaml.safe_dump(data))
    return load_app(path)


def test_the_bake_of_an_analysed_stage_is_watched_by_its_gate(tmp_path: Path) -> None:
    dag = build_dag(with_analysis(tmp_path, {"stages": ["fort"]}, bake_seconds=30))
    assert "fort.bake" not in dag.task_ids  # the fort gate watches those 30 s
    assert {"batch_1.bake", "batch_2.bake"} <= set(dag.task_ids)
    assert ("fort.gate", "batch_1.enter") in edges(dag)


def test_a_window_of_its_own_leaves_the_bake_after_the_gate(tmp_path: Path) -> None:
    dag = build_dag(with_analysis(tmp_path, {"stages": ["fort"], "window_seconds": 5},
                                  bake_seconds=30))
    assert "fort.bake" in dag.task_ids


def test_inconclusive_approval_puts_an_approval_after_the_analysed_stage(tmp_path: Path) -> None:
    dag = build_dag(with_analysis(tmp_path, {"stages": ["fort"], "window_seconds": 5,
                                             "inconclusive": "approval"}))
    assert "fort.approve" in dag.task_ids and "batch_1.approve" not in dag.task_ids
    e = edges(dag)
    # the gate goes past it on a pass (straight to the next stage) or to it when inconclusive
    assert {("fort.gate", "fort.approve"), ("fort.gate", "batch_1.enter")} <= e


def test_the_counters_before_an_analysed_stage_are_read_right_before_its_hosts(
        tmp_path: Path) -> None:
    # Nothing between fetch and the fort, or between the fort's gate and batch_1: those read
    # them (the entries run no worker). After batch_1's approval, batch_2's entry reads them
    # and its release waits for it.
    from tars_operators.operators.release_host import EnterStageOperator

    dag = build_dag(with_analysis(tmp_path, {"stages": ["fort", "batch_1", "batch_2"],
                                             "window_seconds": 5},
                                  approval={"enabled": True, "after": ["batch_1"]}))
    real = [t for t in ("fort.enter", "batch_1.enter", "batch_2.enter")
            if isinstance(dag.get_task(t), EnterStageOperator)]
    assert real == ["batch_2.enter"]
    e = edges(dag)
    assert ("batch_2.enter", "batch_2.release") in e
    assert not {("fort.enter", "fort.release"), ("batch_1.enter", "batch_1.release")} & e
