"""Per-datacenter queues: ``airflow.queue`` on inventory groups / hosts → one mapped host task
per queue (DAG shape), and the readers of task ids (gate, rollback report, progress) see them all."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from tars_operators.client.progress import snapshot
from tars_operators.config.loader import load_app
from tars_operators.factory.builder import build_dag, build_rollback_dag
from tars_operators.release import machine as m

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]


def spec_for(tmp_path: Path, queues: dict[str, str | None], *, group_of=None, host_queue=None,
             **strategy: object):
    """Hosts h01…h06; odd ones in group dc1, even ones in dc2 (unless ``group_of`` says)."""
    data = yaml.safe_load((REPO / "configs/apps/demo.yaml").read_text())
    data.pop("analysis", None)  # the demo's canary analysis names the fort stage
    group_of = group_of or (lambda i: "dc1" if i % 2 else "dc2")
    host_queue = host_queue or {}
    data["hosts"] = {
        "list": [{"name": f"h{i:02d}", "address": f"127.0.0.{10 + i}", "group": group_of(i),
                  "vars": {"deploy_root": f"/srv/h{i}", "app_port": 8080},
                  **({"airflow": {"queue": host_queue[i]}} if i in host_queue else {})}
                 for i in range(1, 7)],
        "groups": {g: ({"airflow": {"queue": q}} if q else {}) for g, q in queues.items()},
        "vars": {"artifact_base": "http://127.0.0.1:1", "haproxy_socket": "/x.sock"}}
    (tmp_path / "app.json.j2").write_text((REPO / "configs/templates/demo/app.json.j2").read_text())
    data["install"]["templates"][0]["src"] = "app.json.j2"
    data["strategy"].update(strategy)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_app(path)


def test_group_queue_and_host_override(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, {"dc1": "dc1", "dc2": "dc2"}, host_queue={5: "dc2"})
    assert {h.name: h.queue for h in spec.hosts} == {
        "h01": "dc1", "h02": "dc2", "h03": "dc1", "h04": "dc2", "h05": "dc2", "h06": "dc2"}
    assert spec.queues == ("dc1", "dc2")


def test_one_queue_keeps_todays_task_ids(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, {"dc1": "dc1", "dc2": "dc1"})
    dag = build_dag(spec)
    assert "fort.release" in dag.task_ids and "rollback.hosts" in dag.task_ids
    assert not [t for t in dag.task_ids if t.startswith("fort.release.")]
    assert dag.get_task("fort.release").queue == "dc1"  # the one queue, on the same task
    assert dag.get_task("prepare").queue == dag.get_task("fort.gate").queue == "default"


def test_two_queues_build_one_release_task_per_queue(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, {"dc1": "dc1", "dc2": None})  # dc2: the default queue
    dag = build_dag(spec)
    for stage in ("fort", "batch_1", "batch_2"):
        plain, dc1 = dag.get_task(f"{stage}.release"), dag.get_task(f"{stage}.release.dc1")
        assert plain.queue == "default" and dc1.queue == "dc1"
        for task in (plain, dc1):
            assert f"{stage}.gate" in task.downstream_task_ids
        # each queue's task maps over its share, picked after the enter task on the default queue
        for task, picker in ((plain, f"{stage}.enter._default"), (dc1, f"{stage}.enter.dc1")):
            assert task.expand_input.value["host"].operator.task_id == picker
            assert dag.get_task(picker).upstream_task_ids == {f"{stage}.enter"}
            assert dag.get_task(picker).queue == "default"
    assert dag.get_task("rollback.hosts.dc1").queue == "dc1"
    assert dag.get_task("rollback.report").upstream_task_ids == {"rollback.hosts",
                                                                  "rollback.hosts.dc1"}
    assert dag.get_task("prepare").queue == dag.get_task("finalize").queue == "default"
    # a queue with no touched host skips its rollback task: the report must still run
    assert dag.get_task("rollback.report").trigger_rule == "all_done"
    rb = build_rollback_dag(spec)
    assert {"restore", "restore.dc1", "plan.dc1", "plan._default"} <= set(rb.task_ids)
    assert dag.get_task("rollback.plan.dc1").downstream_task_ids == {"rollback.hosts.dc1"}
    assert rb.get_task("restore.dc1").queue == "dc1"


def test_task_ids_of_queues_are_release_and_restore_tasks() -> None:
    assert not m.is_release_task("fort.enter.dc2") and not m.is_enter_task("fort.enter.dc2")
    assert not m.is_restore_task("rollback.plan.dc2") and not m.is_restore_task("plan.dc2")
    assert m.is_release_task("batch_1.release.dc2") and m.stage_of("batch_1.release.dc2") == "batch_1"
    assert m.is_restore_task("rollback.hosts.dc2") and m.stage_of("rollback.hosts.dc2") == "rollback"
    assert m.is_restore_task("restore.dc2") and not m.is_restore_task("rollback.report")
    split = m.split_hosts("fort.release", ["a", "b", "c"], {"a": "x", "b": None, "c": "x"},
                          (None, "x"))
    assert [(t.task_id, t.queue, t.hosts) for t in split] == [
        ("fort.release", None, ("b",)), ("fort.release.x", "x", ("a", "c"))]


class FakeTI:
    """What a gate reads from Airflow: the plan, task states and failures pushed, by task id."""

    def __init__(self, plan: dict[str, Any], states: dict[str, str],
                 failures: dict[tuple[str, int], str]):
        self.plan, self.states, self.failures = plan, states, failures
        self.pushed: dict[str, Any] = {}

    def get_task_states(self, *, dag_id: str, run_ids: list[str], task_ids: list[str]):
        return {run_ids[0]: {k: v for k, v in self.states.items()
                             if k in task_ids or k.rsplit("_", 1)[0] in task_ids}}

    def xcom_pull(self, task_ids: str, key: str = "return_value"):
        if task_ids == m.PREPARE and key == "plan":
            return self.plan
        if key == "failure":  # every map index's, as Airflow's slice returns them
            return [{"host": self.failures[(t, i)][0], "message": self.failures[(t, i)]}
                    for (t, i) in sorted(self.failures) if t == task_ids]
        return None

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@pytest.mark.parametrize("failing,decision", [
    ({("batch_1.release", 0): "h02 failed@health"}, "continue"),  # one failure: within budget
    ({("batch_1.release", 0): "h02 failed@health",
      ("batch_1.release.dc1", 1): "h03 failed@smoke"}, "rollback"),  # one per queue: over
])
def test_gate_counts_failures_across_queues(tmp_path: Path, monkeypatch, failing, decision) -> None:
    from tars_operators.operators import gate as gate_mod

    spec = spec_for(tmp_path, {"dc1": "dc1", "dc2": None}, fort=0, batches=[3],
                    failure_budget={"per_stage": 1, "total": 1})
    plan = spec.default_plan
    assert plan.stage_names == ("batch_1", "batch_2")
    monkeypatch.setattr(gate_mod, "reconcile", lambda s, o, v, r, log=None: (o, []))
    monkeypatch.setattr(gate_mod, "set_run_note", lambda *a, **k: None)
    monkeypatch.setattr(gate_mod, "notify", lambda *a, **k: None)
    monkeypatch.setattr(gate_mod, "read_brake", lambda app: None)
    gate = build_dag(spec).get_task("batch_1.gate")
    split = {t.task_id: t.hosts for t in m.split_hosts(
        "batch_1.release", plan.hosts("batch_1"), spec.queue_of, spec.queues)}
    assert split == {"batch_1.release": ("h02",), "batch_1.release.dc1": ("h01", "h03")}
    states = {"batch_1.enter": "success"}
    for task_id, hosts in split.items():
        for i, _ in enumerate(hosts):
            states[f"{task_id}_{i}"] = "failed" if (task_id, i) in failing else "success"
    failures = {k: f"{split[k[0]][k[1]]}: {v}" for k, v in failing.items()}
    ti = FakeTI({**plan.to_dict(), "version": "1.0.0"}, states, failures)
    context = {"ti": ti, "task": gate,
               "dag_run": SimpleNamespace(dag_id=spec.dag_id, run_id="r1")}
    target = gate.choose_branch(context)
    assert ti.pushed["decision"]["decision"] == decision
    assert target == (m.ROLLBACK_PLAN if decision == "rollback" else "batch_2.enter")
    if decision == "rollback":
        assert "2 host(s) failed (h02, h03)" in ti.pushed["decision"]["reason"]


def test_progress_counts_a_stage_once_across_its_queues() -> None:
    tis = [{"task_id": "fort.release", "map_index": 0, "state": "success"},
           {"task_id": "fort.release.dc1", "map_index": 0, "state": "failed"},
           {"task_id": "fort.release.dc1", "map_index": 1, "state": "running"},
           {"task_id": "rollback.hosts.dc1", "map_index": 0, "state": "success"}]
    snap = snapshot({"state": "running"}, tis)
    assert [s.line() for s in snap.stages] == [
        "fort: 1/3 host(s) done, 1 FAILED, 1 in progress", "rollback: 1/1 host(s) done"]


def test_inspect_reads_each_queues_hosts_from_that_queue(tmp_path: Path) -> None:
    from tars_operators.factory.builder import build_inspect_dag
    from tars_operators.web.records import _merge_reads

    spec = spec_for(tmp_path, {"dc1": "dc1", "dc2": "dc2"})
    dag = build_inspect_dag(spec)
    assert {t.task_id: (t.queue, t.host_queue) for t in dag.tasks} == {
        "inspect.dc1": ("dc1", "dc1"), "inspect.dc2": ("dc2", "dc2")}
    one = build_inspect_dag(spec_for(tmp_path, {"dc1": "dc1", "dc2": "dc1"}))
    assert [(t.task_id, t.queue) for t in one.tasks] == [("inspect", "dc1")]
    merged = _merge_reads({"read_at": "2026-01-01T10:00:05", "hosts": [{"host": "h01"}]},
                          {"read_at": "2026-01-01T10:00:01", "hosts": [{"host": "h02"}]})
    assert merged == {"read_at": "2026-01-01T10:00:01", "hosts": [{"host": "h01"}, {"host": "h02"}]}


def test_rollback_report_skips_itself_when_the_run_did_not_roll_back(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    spec = spec_for(tmp_path, {"dc1": "dc1", "dc2": None})
    report = build_dag(spec).get_task("rollback.report")
    ti = FakeTI({}, {"rollback.plan": "skipped"}, {})
    with pytest.raises(AirflowSkipException, match="did not roll back"):
        report.execute({"ti": ti, "task": report,
                        "dag_run": SimpleNamespace(dag_id=spec.dag_id, run_id="r1")})
