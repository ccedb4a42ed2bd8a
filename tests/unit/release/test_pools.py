"""``traffic.pool``: the pool each host task takes a slot of, how Tars makes and checks it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
import yaml

from tars_operators.client.api import Airflow
from tars_operators.config.loader import load_app
from tars_operators.errors import ConfigError, PoolError
from tars_operators.factory.builder import build_dag, build_rollback_dag
from tars_operators.release import pools

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]


def spec_for(tmp_path: Path, name: str = "demo", pool: dict | None = None):
    data = yaml.safe_load((REPO / "configs/apps/demo.yaml").read_text())
    data["app"]["name"] = name
    data["hosts"] = {"list": [{"name": f"h{i:02d}", "address": f"127.0.0.{10 + i}",
                               "vars": {"deploy_root": f"/srv/h{i}", "app_port": 8080}}
                              for i in range(1, 5)],
                     "vars": {"artifact_base": "http://127.0.0.1:1", "haproxy_socket": "/x.sock"}}
    (tmp_path / "app.json.j2").write_text((REPO / "configs/templates/demo/app.json.j2").read_text())
    data["install"]["templates"][0]["src"] = "app.json.j2"
    if pool is not None:
        data["traffic"]["pool"] = pool
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_app(path)


def test_host_tasks_take_a_slot_of_the_pool_and_nothing_else_does(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, pool={"name": "lb-front", "slots": 2})
    dag = build_dag(spec)
    for task in dag.tasks:
        if task.task_id.endswith((".release", ".hosts")):
            assert (task.pool, task.pool_slots) == ("lb-front", 1), task.task_id
        else:
            assert task.pool == "default_pool", task.task_id
    assert build_rollback_dag(spec).get_task("restore").pool == "lb-front"
    assert build_dag(spec_for(tmp_path)).get_task("fort.release").pool == "default_pool"


@pytest.mark.parametrize("found,resize,create,patch,note", [
    (None, False, True, {"slots": 2, "include_deferred": True}, ""),
    ({"slots": 2, "include_deferred": True}, False, False, {}, ""),
    ({"slots": 2, "include_deferred": False}, False, False, {"include_deferred": True}, ""),
    # prepare keeps a size someone chose and says so; tars pools sync sets it
    ({"slots": 5, "include_deferred": True}, False, False, {}, "pool lb has 5 slots, the config says 2"),
    ({"slots": 5, "include_deferred": False}, True, False, {"include_deferred": True, "slots": 2}, ""),
])
def test_pool_change(found, resize, create, patch, note) -> None:
    change = pools.pool_change("lb", 2, found, resize=resize)
    assert change.create is create
    assert dict(change.patch) == patch
    assert change.note.startswith(note) if note else change.note == ""


def test_apps_sharing_a_pool_must_agree_on_its_size(tmp_path: Path) -> None:
    a = spec_for(tmp_path, "shop", {"name": "lb", "slots": 2})
    b = spec_for(tmp_path, "cart", {"name": "lb", "slots": 3})
    c = spec_for(tmp_path, "blog", {"name": "lb", "slots": 2})
    assert pools.wanted([a, c]) == {"lb": 2}
    with pytest.raises(ConfigError) as exc:
        pools.wanted([a, b, c])
    assert "traffic.pool lb: blog, shop say 2 slots; cart say 3 slots" in str(exc.value)


def recording_api(existing: dict[str, dict]) -> tuple[Airflow, list[tuple[str, str, dict]]]:
    """An Airflow client over a fake pools API keeping ``existing`` (name → pool)."""
    seen: list[tuple[str, str, dict]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        seen.append((request.method, str(request.url.copy_with(query=None).path), body))
        name = request.url.path.rsplit("/", 1)[-1]
        if request.method == "GET":
            found = existing.get(name)
            return httpx.Response(200, json=found) if found else httpx.Response(404, json={"detail": "nope"})
        if request.method == "POST":
            existing[body["name"]] = body
            return httpx.Response(201, json=body)
        existing[name].update(body)
        assert request.url.params.get_list("update_mask") == list(body)
        return httpx.Response(200, json=existing[name])

    return Airflow("http://api", token="t", transport=httpx.MockTransport(handle)), seen


def test_prepare_creates_a_missing_pool_counting_deferred_tasks(tmp_path: Path, monkeypatch) -> None:
    spec = spec_for(tmp_path, pool={"name": "lb-front", "slots": 2})
    existing: dict[str, dict] = {}
    api, seen = recording_api(existing)
    monkeypatch.setattr(pools, "task_api", lambda: api)
    line = pools.ensure_pool(spec, logging.getLogger("t"))
    assert line == "pool lb-front (2 slots, deferred tasks count): created"
    assert existing["lb-front"]["slots"] == 2 and existing["lb-front"]["include_deferred"] is True
    assert pools.ensure_pool(spec, logging.getLogger("t")).endswith(": ready")
    assert [m for m, _, _ in seen] == ["GET", "POST", "GET"]


def test_prepare_refuses_when_the_pool_cannot_be_checked(tmp_path: Path, monkeypatch) -> None:
    spec = spec_for(tmp_path, pool={"name": "lb-front", "slots": 2})

    def no_connection():
        raise LookupError("connection 'tars_api': not defined")

    monkeypatch.setattr(pools, "task_api", no_connection)
    with pytest.raises(PoolError) as exc:
        pools.ensure_pool(spec, logging.getLogger("t"))
    text = str(exc.value)
    assert text.startswith("traffic.pool lb-front: cannot check the pool (connection 'tars_api'")
    assert "stays queued" in text and "tars pools sync" in text
    assert "airflow pools set lb-front 2" in text and "--include-deferred" in text
    assert pools.ensure_pool(spec_for(tmp_path), logging.getLogger("t")) is None  # no pool: nothing
