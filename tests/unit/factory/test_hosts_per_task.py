"""Stages of any size plan and build (``strategy.hosts_per_task``): 5,000 hosts never need more
than Airflow's 1,024 mapped task instances, and a task of several hosts is labelled by them."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
import yaml

from tars_operators.client.progress import snapshot, task_hosts
from tars_operators.config.loader import load_app
from tars_operators.factory.builder import HOSTS_LABEL, build_dag
from tars_operators.plan.ramp import plan_release
from tars_operators.plan.tasks import MAX_TASKS, task_items

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]


def big_spec(tmp_path: Path, hosts: int, **strategy: object):
    data = yaml.safe_load((REPO / "configs/apps/demo.yaml").read_text())
    data["hosts"] = {"list": [{"name": f"h{i:05d}", "address": f"127.{1 + i // 62500}."
                               f"{i // 250 % 250}.{1 + i % 250}",
                               "vars": {"deploy_root": f"/srv/h{i}", "app_port": 8080}}
                              for i in range(hosts)],
                     "vars": {"artifact_base": "http://127.0.0.1:1", "haproxy_socket": "/x.sock"}}
    (tmp_path / "app.json.j2").write_text((REPO / "configs/templates/demo/app.json.j2").read_text())
    data["install"]["templates"][0]["src"] = "app.json.j2"
    data["strategy"].update(strategy)
    data.setdefault("traffic", {})["min_in_service"] = 0
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_app(path)


@pytest.mark.parametrize("setting", ["auto", 1])
def test_a_5000_host_stage_plans_and_builds_within_the_map_limit(tmp_path: Path,
                                                                 setting: object) -> None:
    started = time.monotonic()
    spec = big_spec(tmp_path, 5000, batches=["1%", "100%"], hosts_per_task=setting)
    plan = plan_release(spec)
    assert max(len(s.hosts) for s in plan.stages) >= 4900
    for stage in plan.stages:
        items = task_items(spec.config.strategy.hosts_per_task, stage.hosts)
        assert 1 <= len(items) <= MAX_TASKS
        assert [h for i in items for h in ([i] if isinstance(i, str) else i)] == list(stage.hosts)
    dag = build_dag(spec)
    assert "batch_2.release" in dag.task_ids
    assert time.monotonic() - started < 60


def test_a_task_of_several_hosts_is_labelled_by_its_first_last_and_count() -> None:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    label = env.from_string(HOSTS_LABEL)
    assert label.render(task=SimpleNamespace(host="h00007")) == "h00007"
    many = label.render(task=SimpleNamespace(host=["h00001", "h00002", "h00025"]))
    assert many == "h00001 … h00025 (3 hosts)"
    # tars deploy --follow counts the hosts of such a task, not the task
    assert task_hosts({"rendered_map_index": many}) == 3
    tis = [{"task_id": "batch_2.release", "map_index": 0, "state": "success",
            "rendered_map_index": "h1 … h25 (25 hosts)"},
           {"task_id": "batch_2.release", "map_index": 1, "state": "running",
            "rendered_map_index": "h26 … h40 (15 hosts)"}]
    [stage] = snapshot({"state": "running"}, tis).stages
    assert (stage.hosts, stage.done, stage.active) == (40, 25, 15)
    assert stage.line() == "batch_2: 25/40 host(s) done, 15 in progress"
