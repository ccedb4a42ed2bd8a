"""An example DAG of your own built from Tars's stage operators: release one host of ``demo``.

fetch → stage → pull_out → activate → health → smoke → mark → pull_in → prune, each a task of
its own (docs/operators.md). Copy this file into your dags folder and set ``APP``; the app's
config is read from ``$TARS_CONFIG_DIR/<APP>.yaml`` (else ``configs/apps``). Trigger it with
``{"version": "2.0.0", "host": "host01"}``.

Unlike a Tars release this DAG does not take the host's lease nor roll back on failure: a failed
stage fails its task and leaves the host where that task left it (out of rotation after
``pull_out``), for you to handle.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from airflow.sdk import DAG, Param

from tars_operators.operators.steps import (
    ActivateReleaseOperator,
    FetchArtifactOperator,
    MarkReleaseOperator,
    PruneReleasesOperator,
    PullInOperator,
    PullOutOperator,
    SmokeTestOperator,
    StageReleaseOperator,
)
from tars_operators.sensors.health import HealthCheckSensor

APP = "demo"
CONFIG = str(Path(os.environ.get("TARS_CONFIG_DIR", "configs/apps")) / f"{APP}.yaml")

with DAG(
    dag_id=f"custom_pipeline__{APP}",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=1,
    tags=["tars", "example"],
    params={
        "version": Param(type="string", pattern=r"^[0-9A-Za-z][0-9A-Za-z._+-]*$",
                         description="the version to release"),
        "host": Param(type="string", description="the host of the inventory to release"),
    },
) as dag:
    common = {"spec_path": CONFIG, "version": "{{ params.version }}", "host_name": "{{ params.host }}"}
    fetch = FetchArtifactOperator(task_id="fetch", spec_path=CONFIG, version="{{ params.version }}")
    stage = StageReleaseOperator(task_id="stage", artifact=fetch.output, **common)
    pull_out = PullOutOperator(task_id="pull_out", **common)
    activate = ActivateReleaseOperator(task_id="activate", **common)
    health = HealthCheckSensor(task_id="health", **common)  # waits in the triggerer
    smoke = SmokeTestOperator(task_id="smoke", **common)
    mark = MarkReleaseOperator(task_id="mark_good", status="good", **common)
    pull_in = PullInOperator(task_id="pull_in", **common)
    prune = PruneReleasesOperator(task_id="prune", spec_path=CONFIG, host_name="{{ params.host }}")

    fetch >> stage >> pull_out >> activate >> health >> smoke >> mark >> pull_in >> prune
