"""A rollback of any number of hosts (``rollback.hosts``, the rollback DAG's ``restore``): the
release's rule (``strategy.hosts_per_task``) keeps it within Airflow's 1,024 mapped task
instances, a chunk never mixes queues, one host per task stays as it was, and a task of several
hosts restores the others when one fails, names it and fails."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import pytest

from tars_operators.factory.builder import HOSTS_LABEL, build_dag, build_rollback_dag
from tars_operators.operators import rollback as rb
from tars_operators.plan.ramp import ReleasePlan
from tars_operators.plan.rollback_items import flat_hosts, item_hosts
from tars_operators.plan.tasks import MAX_TASKS
from tars_operators.release import hostflow, machine as m
from tests.unit.factory.test_hosts_per_task import big_spec
from tests.unit.factory.test_queues import spec_for

pytestmark = pytest.mark.unit


def target(version: str = "1.0.0") -> dict[str, Any]:
    return {"version": version, "move": True, "why": "undo run r0", "current": "2.0.0",
            "undo": "2.0.0"}


@pytest.mark.parametrize("setting", ["auto", 1])
def test_5000_touched_hosts_roll_back_within_the_map_limit(tmp_path: Path, setting: object) -> None:
    spec = big_spec(tmp_path, 5000, batches=["1%", "100%"], hosts_per_task=setting)
    hosts = [h.name for h in spec.hosts]
    items = rb.mapped_items(spec, hosts)
    assert 1 < len(items) <= MAX_TASKS
    assert flat_hosts(items) == hosts  # each host exactly once, in release order
    kwargs = rb.mapped_items(spec, [{"host": h, "target": target()} for h in hosts])
    assert 1 < len(kwargs) <= MAX_TASKS
    assert flat_hosts(kwargs) == hosts
    assert all(set(k["target"]) == set(k["host"]) for k in kwargs)  # each host's own target
    # the tasks are labelled by their hosts, as the release tasks are
    for dag, task_id in ((build_dag(spec), "rollback.hosts"), (build_rollback_dag(spec), "restore")):
        task = dag.get_task(task_id)
        assert task.map_index_template == HOSTS_LABEL
    label = jinja2.Environment().from_string(HOSTS_LABEL)
    assert label.render(task=SimpleNamespace(host=items[0])).endswith(f"({len(items[0])} hosts)")


def test_one_host_per_task_is_unchanged(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, {"dc1": None, "dc2": None})  # six hosts
    hosts = [h.name for h in spec.hosts][:3]  # auto: one per task up to 3 hosts
    assert rb.mapped_items(spec, hosts) == hosts
    one = [{"host": h, "target": target()} for h in hosts]
    assert rb.mapped_items(spec, one) == one
    label = jinja2.Environment().from_string(HOSTS_LABEL)
    assert label.render(task=SimpleNamespace(host="h01")) == "h01"
    assert build_dag(spec).get_task("rollback.hosts").max_active_tis_per_dagrun == 4  # 6 - 25%


def test_each_queue_chunks_its_own_hosts(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, {"dc1": "dc1", "dc2": "dc2"}, hosts_per_task=2)
    hosts = [h.name for h in spec.hosts]
    assert rb.mapped_items(spec, hosts) == hosts  # flat: each queue's picker chunks its share
    dag, restore_dag = build_dag(spec), build_rollback_dag(spec)
    targets = [{"host": h, "target": target()} for h in hosts]
    for picker, source in (
            (dag.get_task("rollback.plan.dc1"), hosts), (dag.get_task("rollback.plan.dc2"), hosts),
            (restore_dag.get_task("plan.dc1"), targets), (restore_dag.get_task("plan.dc2"), targets)):
        ti = SimpleNamespace(xcom_pull=lambda task_ids, **k: source)
        items = picker.execute({"ti": ti, "task": picker})
        queue = picker.host_queue
        assert [item_hosts(i) for i in items] == (
            [["h01", "h03"], ["h05"]] if queue == "dc1" else [["h02", "h04"], ["h06"]])
        assert all(spec.queue_of[h] == queue for i in items for h in item_hosts(i))
    # the host task reads how many tasks share its queue's rollback from its picker
    assert dag.get_task("rollback.hosts.dc1").partial_kwargs["source"] == "rollback.plan.dc1"


class FakeTI:
    """XComs by (task id, key, map index), and what a task pushed."""

    def __init__(self, xcoms: dict[tuple[str, str, int], Any] | None = None,
                 states: dict[str, str] | None = None) -> None:
        self.xcoms, self.states = xcoms or {}, states or {}
        self.pushed: dict[str, Any] = {}

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        """An unmapped task's value, or every map index's (Airflow's slice)."""
        if (task_ids, key, -1) in self.xcoms:
            return self.xcoms[(task_ids, key, -1)]
        return [v for (t, k, i), v in sorted(self.xcoms.items()) if (t, k) == (task_ids, key)]

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def get_task_states(self, *, dag_id: str, run_ids: list[str], task_ids: list[str]) -> Any:
        return {run_ids[0]: self.states}


def restored(host: str, version: str = "1.0.0") -> dict[str, Any]:
    return {"host": host, "state": "restored", "version": version, "from": "2.0.0",
            "moved": True, "why": "undo", "seconds": 0.1, "steps": []}


def test_a_failing_host_of_a_chunk_fails_its_task_and_the_others_are_restored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_for(tmp_path, {"dc1": None, "dc2": None}, hosts_per_task=3)
    calls: list[tuple[str, str]] = []

    def fake_restore(spec: Any, host: Any, bad: Any, run_id: str, **kw: Any) -> dict[str, Any]:
        calls.append((host.name, kw["target"].version))
        if host.name == "h02":
            raise hostflow.StepFailed("h02: rollback: health check failed: 503 — host OUT OF ROTATION")
        return restored(host.name)

    monkeypatch.setattr(rb.restore, "restore_host", fake_restore)
    monkeypatch.setattr(rb, "RunLease", SimpleNamespace(from_context=lambda c, s: None))
    [chunk, _] = rb.mapped_items(spec, [{"host": h.name, "target": target()} for h in spec.hosts])
    assert chunk["host"] == ["h01", "h02", "h03"]
    task = rb.RollbackHostOperator(task_id="restore", source="plan", config_path=str(spec.source),
                                   defaults_path=None, **chunk)
    ti = FakeTI({("plan", "return_value", -1): [chunk, {}]})
    with pytest.raises(hostflow.StepFailed, match=r"rollback failed on 1 of 3 host\(s\): h02: "
                                                  "health check failed: 503"):
        task.execute({"ti": ti, "task": task, "dag_run": SimpleNamespace(run_id="r1")})
    assert sorted(calls) == [("h01", "1.0.0"), ("h02", "1.0.0"), ("h03", "1.0.0")]
    assert [(r["host"], r["state"]) for r in ti.pushed["host_results"]] == [
        ("h01", "restored"), ("h02", "failed"), ("h03", "restored")]
    assert ti.pushed["failure"] == [{"host": "h02", "message": "health check failed: 503 — host "
                                                              "OUT OF ROTATION"}]


def test_restore_threads_keep_the_capacity_floor(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, {"dc1": None, "dc2": None}, hosts_per_task=3)
    # six hosts, 25% in service: 4 may be out together, shared by the tasks running at once
    assert rb.restore_threads(spec, 1, 3) == 3
    assert rb.restore_threads(spec, 2, 3) == 2
    assert rb.restore_threads(spec, 500, 3) == 1


@pytest.mark.parametrize("per_task", [1, 3])
def test_rollback_summary_reads_both_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            per_task: int) -> None:
    from tars_operators.release import truth

    spec = spec_for(tmp_path, {"dc1": None, "dc2": None}, hosts_per_task=per_task)
    hosts = [h.name for h in spec.hosts]
    items = rb.mapped_items(spec, hosts)
    why = "health check failed: 503 — host OUT OF ROTATION"
    xcoms: dict[tuple[str, str, int], Any] = {}
    states: dict[str, str] = {}
    for i, item in enumerate(items):
        names = item_hosts(item)
        states[f"{m.ROLLBACK_HOSTS}_{i}"] = "failed" if "h02" in names else "success"
        if per_task == 1:
            if item == "h02":
                xcoms[(m.ROLLBACK_HOSTS, "failure", i)] = {"host": "h02", "message": why}
            else:
                xcoms[(m.ROLLBACK_HOSTS, "return_value", i)] = restored(item)
        else:
            xcoms[(m.ROLLBACK_HOSTS, "host_results", i)] = [
                {"host": h, "state": "failed", "message": why} if h == "h02" else restored(h)
                for h in names]
            if "h02" in names:
                xcoms[(m.ROLLBACK_HOSTS, "failure", i)] = [{"host": "h02", "message": why}]

    def seen(name: str) -> Any:
        back = name != "h02"
        return SimpleNamespace(on=lambda v: not back and v == "2.0.0", good=back, in_service=back)

    monkeypatch.setattr(rb, "stage_outcomes", lambda context, plan: [])
    monkeypatch.setattr(rb, "run_holder", lambda context: None)
    monkeypatch.setattr(truth, "reconcile", lambda s, o, v, r: (o, []))
    monkeypatch.setattr(truth, "read_truth", lambda s, names, release_for: {n: seen(n) for n in names})
    monkeypatch.setattr(truth, "problems", lambda seen, expect: [])
    monkeypatch.setattr(rb.restore, "rotation_problems", lambda s, others, mine: ([], []))
    plan = ReleasePlan.from_dict({**spec.default_plan.to_dict(), "version": "2.0.0"})
    task = build_dag(spec).get_task("rollback.report")
    context = {"ti": FakeTI(xcoms, states), "task": task,
               "dag_run": SimpleNamespace(dag_id=spec.dag_id, run_id="r1")}
    message, details = rb.rollback_summary(context, spec, plan, flat_hosts(items))  # type: ignore[arg-type]
    assert "5/6 touched host(s) on a good release and UP; NOT: h02." in message
    assert f"h02: NOT restored (rollback task failed): {why}" in details
    assert "h01: restored to 1.0.0, in rotation" in details
    assert "h06: restored to 1.0.0, in rotation" in details


def test_tars_deploy_follow_counts_the_hosts_of_a_multi_host_rollback_task() -> None:
    from tars_operators.client.progress import snapshot

    tis = [{"task_id": "rollback.hosts", "map_index": 0, "state": "success",
            "rendered_map_index": "h01 … h04 (4 hosts)"},
           {"task_id": "rollback.hosts", "map_index": 1, "state": "running",
            "rendered_map_index": "h05 … h07 (3 hosts)"}]
    [stage] = snapshot({"state": "running"}, tis).stages
    assert stage.line() == "rollback: 4/7 host(s) done, 3 in progress"
