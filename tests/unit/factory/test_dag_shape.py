"""The deploy DAG's shape (task ids, edges, trigger rules) for a few strategies."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tars_operators.config.loader import load_app
from tars_operators.factory.builder import build_dag, build_rollback_dag

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]


def spec_for(tmp_path: Path, hosts: int = 10, **strategy: object):
    data = yaml.safe_load((REPO / "configs/apps/demo.yaml").read_text())
    data["hosts"] = {"list": [{"name": f"h{i:02d}", "address": f"127.0.0.{10 + i}",
                               "vars": {"deploy_root": f"/srv/h{i}", "app_port": 8080}}
                              for i in range(1, hosts + 1)],
                     "vars": {"artifact_base": "http://127.0.0.1:1", "haproxy_socket": "/x.sock"}}
    (tmp_path / "app.json.j2").write_text((REPO / "configs/templates/demo/app.json.j2").read_text())
    data["install"]["templates"][0]["src"] = "app.json.j2"  # sources stay in the config repository
    data["strategy"].update(strategy)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_app(path)


def edges(dag) -> set[tuple[str, str]]:
    return {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}


def rules(dag) -> dict[str, str]:
    return {t.task_id: str(t.trigger_rule.value if hasattr(t.trigger_rule, "value") else t.trigger_rule)
            for t in dag.tasks}


def test_default_ramp_has_fort_and_three_batches(tmp_path: Path) -> None:
    dag = build_dag(spec_for(tmp_path))
    stages = ["fort", "batch_1", "batch_2", "batch_3"]
    expected = {"prepare", "fetch", "abort", "dry_run", "halt", "finalize", "rollback.plan",
                "rollback.hosts", "rollback.report", "release_event"}
    expected |= {f"{s}.{t}" for s in stages for t in ("enter", "release", "gate")}
    assert set(dag.task_ids) == expected
    e = edges(dag)
    assert {("prepare", "fetch"), ("prepare", "dry_run"), ("fetch", "fort.enter")} <= e
    # a failed prepare/fetch reaches a leaf that fails the run (the gates would skip)
    # (its only downstream task is the release event, a teardown that does not decide the run)
    assert ("fetch", "abort") in e and dag.get_task("abort").downstream_task_ids == {"release_event"}
    for a, b in zip(stages, stages[1:]):
        assert (f"{a}.gate", f"{b}.enter") in e
        # the release maps over what the previous gate returned: one task hop per stage
        assert (f"{a}.gate", f"{b}.release") in e
    assert ("fetch", "fort.release") in e
    # an entry runs no worker (the scheduler marks it); the fort's counters for canary
    # analysis are read by fetch, right before it
    assert all(dag.get_task(f"{s}.enter").inherits_from_empty_operator for s in stages)
    for s in stages:
        assert {(f"{s}.release", f"{s}.gate"), (f"{s}.enter", f"{s}.gate")} <= e
        # a release waits for its entry only when a bake or an approval sits before it
        assert (f"{s}.enter", f"{s}.release") not in e
        assert {(f"{s}.gate", "rollback.plan"), (f"{s}.gate", "halt"),
                (f"{s}.gate", "finalize")} <= e
    r = rules(dag)
    assert all(r[f"{s}.gate"] == "all_done" for s in stages)
    assert r["rollback.plan"] == r["halt"] == r["finalize"] == "none_failed_min_one_success"
    assert r["rollback.report"] == "none_skipped"
    assert r["abort"] == "one_failed"
    assert dag.max_active_runs == 1 and "tars" in dag.tags
    assert dag.get_task("fort.release").max_active_tis_per_dagrun == 32


def test_approval_and_bake_sit_between_gate_and_next_stage(tmp_path: Path) -> None:
    dag = build_dag(spec_for(tmp_path, bake_seconds=30,
                             approval={"enabled": True, "after": ["fort"], "timeout_seconds": 60,
                                       "default": "halt"}))
    e = edges(dag)
    assert {("fort.gate", "fort.bake"), ("fort.bake", "fort.approve"),
            ("fort.approve", "batch_1.enter"), ("fort.approve", "rollback.plan"),
            ("fort.approve", "halt"), ("fort.gate", "batch_1.enter")} <= e
    # a release waits for its entry, after the bake (and the approval) before it
    assert {(f"{s}.enter", f"{s}.release") for s in ("batch_1", "batch_2", "batch_3")} <= e
    approve = dag.get_task("fort.approve")
    assert approve.options_mapping == {"Continue": "batch_1.enter", "Roll back": "rollback.plan",
                                       "Halt": "halt"}
    assert approve.defaults == ["Halt"]
    assert "batch_1.approve" not in dag.task_ids  # approval only where configured
    assert "batch_3.bake" not in dag.task_ids  # nothing to bake before after the last stage


def test_no_fort_single_batch(tmp_path: Path) -> None:
    dag = build_dag(spec_for(tmp_path, hosts=4, fort=0, batches=["50%"]))
    assert not any(t.startswith("fort.") for t in dag.task_ids)
    assert ("fetch", "batch_1.enter") in edges(dag)
    assert ("batch_2.gate", "finalize") in edges(dag) and "batch_3.enter" not in dag.task_ids


def test_params_make_a_trigger_form(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, hosts=3)
    params = build_dag(spec).params
    assert params.get_param("hosts").schema["items"]["enum"] == ["h01", "h02", "h03"]
    assert spec.config.artifact.version_pattern in params.get_param("version").schema["pattern"]
    assert params["skip_fort"] is False and params["dry_run"] is False


def test_rollback_dag_limits_hosts_out_at_once(tmp_path: Path) -> None:
    dag = build_rollback_dag(spec_for(tmp_path, hosts=10))
    assert set(dag.task_ids) == {"plan", "restore"}
    assert dag.get_task("restore").max_active_tis_per_dagrun == 7  # 10 hosts, 25% must stay


def required_in_the_ui(params) -> set[str]:
    """What Airflow 3.3's trigger form treats as required: a type that does not allow null."""
    required = set()
    for name in params:
        kind = params.get_param(name).schema.get("type")
        if kind and not (isinstance(kind, list) and "null" in kind):
            required.add(name)
    return required


def test_the_form_requires_only_version_and_reason(tmp_path: Path) -> None:
    dag = build_dag(spec_for(tmp_path, hosts=3))
    assert required_in_the_ui(dag.params) == {"version", "reason"}
    # Left empty by a person (null), the optional fields still validate.
    for name in ("ticket", "dry_run", "hosts", "batches", "skip_fort", "skip_fort_reason", "force",
                 "force_reason"):
        param = dag.params.get_param(name)
        assert param.resolve(None, suppress_exception=False) is None, name
    with pytest.raises(Exception, match="None is not of type"):
        dag.params.get_param("version").resolve(None, suppress_exception=False)


def test_the_version_field_speaks_in_versions_not_regexes(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, hosts=3)
    param = build_dag(spec).params.get_param("version")
    assert "^" not in param.description and "[0-9]" not in param.description, param.description
    assert "'latest' takes the artifact store's latest pointer" in param.description
    assert param.schema["examples"][-1] == "latest"


def test_inspect_dag_is_one_manual_read_of_every_host(tmp_path: Path) -> None:
    from tars_operators.factory.builder import build_inspect_dag
    from tars_operators.operators.inspect import InspectHostsOperator

    dag = build_inspect_dag(spec_for(tmp_path))
    assert dag.dag_id == "tars_inspect__demo"
    assert dag.task_ids == ["inspect"] and isinstance(dag.get_task("inspect"), InspectHostsOperator)
    # Started from the App view only: no schedule, one at a time, never paused at creation
    # (a paused DAG would leave the refresh queued), no retries hiding an unreachable host.
    assert dag.schedule is None and dag.max_active_runs == 1
    assert dag.is_paused_upon_creation is False
    assert dag.get_task("inspect").retries == 0


def test_the_runs_own_decisions_retry_an_unexpected_error_and_host_tasks_do_not(
        tmp_path: Path) -> None:
    # A gate or finalize that dies on a transient error would leave the run with no decision
    # and no report: they retry (a deliberate AirflowFailException is never retried). Host
    # tasks follow steps.host_retries (0); prepare, fetch and approvals are not retried.
    dag = build_dag(spec_for(tmp_path, approval={"enabled": True, "after": ["fort"]}))
    retries = {t.task_id: t.retries for t in dag.tasks}
    # (stage entries run no worker: nothing of theirs can fail)
    control = [t for t in retries if t.endswith(".gate") or t in (
        "finalize", "halt", "rollback.plan", "rollback.report")]
    assert len(control) == 4 + 4
    assert {t: retries[t] for t in control} == {t: 2 for t in control}
    assert {t: n for t, n in retries.items() if t.endswith((".release", ".approve")) or t in (
        "prepare", "fetch", "rollback.hosts")} == {
        "prepare": 0, "fetch": 0, "fort.approve": 0, "rollback.hosts": 0,
        **{f"{s}.release": 0 for s in ("fort", "batch_1", "batch_2", "batch_3")}}
