"""Host state you can trust, on the sandbox's real sshd, demo app and HAProxy.

Hosts laid out by another tool (absolute ``current``, no Tars metadata) are adopted; a
rollback goes to a target resolved from what the host says, and repairs a host from the
states a killed worker leaves: app stopped on the right release, ``current`` switched to a
release that never got its metadata. Every claim is checked as a user would: the version
the app serves, the link on disk, the metadata, and HAProxy's own state.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sandbox import Sandbox
from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import HealthCheckFailed
from tars_operators.hooks.artifacts import fetch_artifact
from tars_operators.hooks.lb import load_balancer_for
from tars_operators.hooks.ssh import open_session
from tars_operators.operators.rollback import AppRollbackPlanOperator, RollbackHostOperator
from tars_operators.release.hostflow import HostJob, failure, finish, run_until_health
from tars_operators.release.restore import restore_host
from tars_operators.steps.stage import stage_release
from tars_operators.steps.state import HostState, layout_for, previous_good, read_host_state
from tars_operators.steps.traffic import pull_out
from tests.integration.test_traffic import make_spec
from tests.polling import poll

pytestmark = pytest.mark.integration


@pytest.fixture
def spec(fleet: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppSpec:
    """The demo app behind the sandbox HAProxy; health gives up after 4 s (the broken build)."""
    monkeypatch.setenv("AIRFLOW_CONN_TARS_SANDBOX", json.dumps(fleet.connection_json))
    monkeypatch.setenv("TARS_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "config").mkdir()
    base = make_spec(fleet, config_dir=tmp_path / "config")
    health = [c.model_copy(update={"timeout": 4.0}) for c in base.config.health]
    return AppSpec(config=base.config.model_copy(update={"health": health}), hosts=base.hosts,
                   source=base.source, global_vars=base.global_vars)


def root_of(host: Host) -> Path:
    return Path(host.vars["deploy_root"])


def meta(host: Host, version: str) -> dict[str, Any]:
    return json.loads((root_of(host) / "releases" / version / ".tars" / "release.json").read_text())


def app_pid(host: Host) -> str:
    return (root_of(host) / "shared" / "demo.pid").read_text().strip()


def state_of(spec: AppSpec, host: Host) -> HostState:
    with open_session(spec, host) as s:
        return read_host_state(s, layout_for(spec, host))


def on_host(spec: AppSpec, host: Host, command: str) -> None:
    with open_session(spec, host) as s:
        s.run(command, step="test", label="by hand")


def assert_serving_and_up(fleet: Sandbox, host: Host, version: str) -> None:
    """What a user checks: the app answers with the version and HAProxy has it UP."""
    assert fleet.served_version(host.name) == version
    assert fleet.server_states()[host.name] == "UP"
    assert (root_of(host) / "current").resolve() == (root_of(host) / "releases" / version).resolve()


def another_tools_layout(host: Host) -> None:
    """As a host installed by another tool: no .tars metadata, ``current`` an ABSOLUTE link."""
    root = root_of(host)
    shutil.rmtree(root / "releases" / "1.0.0" / ".tars")
    (root / "current").unlink()
    (root / "current").symlink_to(root / "releases" / "1.0.0")


def test_adopted_host_survives_a_broken_first_release(fleet: Sandbox, spec: AppSpec) -> None:
    host = spec.hosts[0]
    another_tools_layout(host)
    state = state_of(spec, host)
    assert state.current == "1.0.0" and state.current_meta.status == "adopted"  # type: ignore[union-attr]
    assert previous_good(state) == "1.0.0"
    job = HostJob(spec, host, "2.0.0-broken", "release-run-a", artifact=fetch_artifact(spec, "2.0.0-broken"))
    with pytest.raises(HealthCheckFailed) as err:
        run_until_health(job)
    assert "OUT OF ROTATION" in failure(job, err.value)
    assert [r.detail for r in job.results if r.step == "activate"] == ["switched 1.0.0 → 2.0.0-broken and started"]
    assert fleet.server_states()[host.name] != "UP"
    assert meta(host, "1.0.0")["status"] == "adopted"  # written before current moved away
    broken = meta(host, "2.0.0-broken")
    assert (broken["status"], broken["replaced"], broken["activated_run_id"]) == ("failed", "1.0.0", "release-run-a")

    result = restore_host(spec, host, "2.0.0-broken", "rollback-run-a", undo_run="release-run-a")
    assert (result["version"], result["moved"], result["state"]) == ("1.0.0", True, "restored")
    assert_serving_and_up(fleet, host, "1.0.0")
    adopted = meta(host, "1.0.0")
    assert adopted["status"] == "adopted" and adopted["restored_by_run"] == "rollback-run-a"
    assert "activated_run_id" not in adopted  # a restore is not a release

    pid = app_pid(host)
    again = restore_host(spec, host, "2.0.0-broken", "rollback-run-a2", undo_run="release-run-a")
    assert (again["version"], again["moved"], again["state"]) == ("1.0.0", False, "unchanged")
    assert app_pid(host) == pid
    assert_serving_and_up(fleet, host, "1.0.0")


class _Plan(AppRollbackPlanOperator):
    """The rollback DAG's plan task, given the test's spec instead of a config file."""

    def __init__(self, *, test_spec: AppSpec, **kwargs: Any) -> None:
        super().__init__(config_path="/unused.yaml", defaults_path=None, **kwargs)
        self._spec = test_spec

    @property
    def spec(self) -> AppSpec:  # type: ignore[override]
        return self._spec


class _Restore(RollbackHostOperator):
    def __init__(self, *, test_spec: AppSpec, **kwargs: Any) -> None:
        super().__init__(config_path="/unused.yaml", defaults_path=None, **kwargs)
        self._spec = test_spec

    @property
    def spec(self) -> AppSpec:  # type: ignore[override]
        return self._spec


def rollback_dag(spec: AppSpec, run_id: str, **params: Any) -> list[dict[str, Any]]:
    """tars_rollback__demo as the scheduler runs it: the plan, then one restore per host."""
    pushed: dict[str, Any] = {}
    context: dict[str, Any] = {
        "params": {"reason": "test", "ticket": "", "hosts": [], "version": None, **params},
        "dag_run": SimpleNamespace(dag_id="tars_rollback__demo", run_id=run_id, triggering_user_name="tester"),
        "ti": SimpleNamespace(xcom_push=lambda key, value: pushed.__setitem__(key, value)),
    }
    planned = _Plan(task_id="plan", test_spec=spec).execute(context)
    done: list[dict[str, Any]] = []
    for p in planned:  # a task of several hosts (hosts_per_task) returns each host's result
        result = _Restore(task_id="restore", test_spec=spec, **p).execute(context)
        done += ([{**p, "result": result}] if isinstance(p["host"], str) else
                 [{"host": r["host"], "target": p["target"][r["host"]], "result": r} for r in result])
    return done


def test_app_stopped_on_its_target_is_restarted_and_back_up(fleet: Sandbox, spec: AppSpec) -> None:
    """A worker killed mid-activation, before the switch: old release current, app stopped, drained."""
    host = spec.hosts[1]
    with open_session(spec, host) as s:
        stage_release(s, spec, host, "2.0.0", fetch_artifact(spec, "2.0.0"), "release-run-b")
    with load_balancer_for(spec) as lb:
        pull_out(lb, spec, host)
    on_host(spec, host, f"{root_of(host)}/current/bin/demo-ctl stop")
    poll(lambda: fleet.served_version(host.name) is None, 10, "the app to stop")
    pid = app_pid(host) if (root_of(host) / "shared/demo.pid").exists() else None

    # `tars rollback demo --hosts host02`: nothing to undo here, the host is repaired in place.
    [done] = rollback_dag(spec, "rollback-run-b", hosts=[host.name])
    assert done["target"]["version"] == "1.0.0" and not done["target"]["move"]
    assert done["result"]["state"] == "restored" and not done["result"]["moved"]
    assert [s["step"] for s in done["result"]["steps"]] == ["pull_out", "activate", "health", "pull_in"]
    assert_serving_and_up(fleet, host, "1.0.0")
    assert app_pid(host) != pid
    assert meta(host, "2.0.0")["status"] == "staged"  # never activated: not marked failed


def test_current_switched_without_metadata_goes_back_to_previous_good(fleet: Sandbox, spec: AppSpec) -> None:
    """Killed right after the ``mv``: current is a staged release that never got its metadata."""
    host = spec.hosts[2]
    with open_session(spec, host) as s:
        stage_release(s, spec, host, "2.0.0", fetch_artifact(spec, "2.0.0"), "release-run-c")
    with load_balancer_for(spec) as lb:
        pull_out(lb, spec, host)
    root = root_of(host)
    on_host(spec, host, f"cd {root} && current/bin/demo-ctl stop && ln -sfn releases/2.0.0 current.tmp-x "
                        "&& mv -T current.tmp-x current")
    state = state_of(spec, host)
    assert state.current == "2.0.0" and state.current_meta.status == "staged"  # type: ignore[union-attr]

    result = restore_host(spec, host, None, "rollback-run-c")
    assert (result["version"], result["moved"], result["from"]) == ("1.0.0", True, "2.0.0")
    assert_serving_and_up(fleet, host, "1.0.0")
    assert meta(host, "2.0.0")["status"] == "failed" and meta(host, "1.0.0")["restored_by_run"] == "rollback-run-c"


def release(spec: AppSpec, host: Host, version: str, run_id: str) -> None:
    job = HostJob(spec, host, version, run_id, artifact=fetch_artifact(spec, version))
    assert run_until_health(job) is None
    finish(job)


def test_rollback_undoes_the_latest_run_once_and_never_moves_untouched_hosts(
    fleet: Sandbox, spec: AppSpec,
) -> None:
    touched, untouched = list(spec.hosts[3:5]), spec.hosts[5]
    for host in touched:
        release(spec, host, "2.0.0", "release-run-d")
        assert_serving_and_up(fleet, host, "2.0.0")
    pids = {h.name: app_pid(h) for h in spec.hosts}
    names = [h.name for h in (*touched, untouched)]

    first = {d["host"]: d for d in rollback_dag(spec, "rollback-run-d1", hosts=names)}
    for host in touched:
        assert first[host.name]["target"]["version"] == "1.0.0" and first[host.name]["target"]["move"]
        assert first[host.name]["result"]["moved"]
        assert_serving_and_up(fleet, host, "1.0.0")
        assert meta(host, "2.0.0")["status"] == "failed"
    assert not first[untouched.name]["target"]["move"] and first[untouched.name]["result"]["state"] == "unchanged"
    assert app_pid(untouched) == pids[untouched.name]  # not even restarted

    pids = {h.name: app_pid(h) for h in spec.hosts}
    second = rollback_dag(spec, "rollback-run-d2")  # every host of the app this time
    assert len(second) == len(spec.hosts)
    assert [d["host"] for d in second if d["target"]["move"] or d["result"]["state"] != "unchanged"] == []
    assert {h.name: app_pid(h) for h in spec.hosts} == pids
    for host in (*touched, untouched):
        assert_serving_and_up(fleet, host, "1.0.0")

    # An explicit version must be a good (or adopted) release on the host: 2.0.0 was undone.
    refused = rollback_dag_refusal(spec, touched[0], "2.0.0")
    assert "2.0.0 is failed on this host" in refused


def rollback_dag_refusal(spec: AppSpec, host: Host, version: str) -> str:
    from tars_operators.release.hostflow import StepFailed

    with pytest.raises(StepFailed) as err:
        rollback_dag(spec, "rollback-run-e", hosts=[host.name], version=version)
    assert fleet_state_unchanged(spec, host)
    return str(err.value)


def fleet_state_unchanged(spec: AppSpec, host: Host) -> bool:
    return state_of(spec, host).current == "1.0.0"


@pytest.fixture(autouse=True)
def _no_note_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No Airflow api-server here: run notes go to the log only (set_run_note says so)."""
    monkeypatch.delenv("AIRFLOW_CONN_TARS_API", raising=False)
    yield
