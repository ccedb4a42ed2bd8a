"""steps.<step>.timeout / .retries and service.restart against the sandbox's real sshd, demo app
and HAProxy: what HAProxy reports, what the host serves, what the error says."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox import Sandbox
from tars_operators.config.schema import Install, Service, Steps
from tars_operators.config.spec import AppSpec
from tars_operators.errors import LoadBalancerError, RemoteCommandTimeout
from tars_operators.hooks.artifacts import fetch_artifact
from tars_operators.hooks.lb import load_balancer_for
from tars_operators.hooks.ssh import open_session
from tars_operators.release.restore import restore_host
from tars_operators.steps import policy
from tars_operators.steps.activate import activate_release
from tars_operators.steps.checks import run_checks
from tars_operators.steps.stage import stage_release
from tars_operators.steps.traffic import pull_in, pull_out
from tests.integration.test_traffic import CONN_ID, app_healthy, demo_ctl, haproxy_status, make_spec
from tests.polling import poll

pytestmark = pytest.mark.integration
CTL = "{{ deploy_root }}/current/bin/demo-ctl"


def with_config(spec: AppSpec, *, steps: dict[str, Any] | None = None,
                service: dict[str, Any] | None = None, pre_install: list[str] | None = None) -> AppSpec:
    """``spec`` with its ``steps``, ``service`` or ``install.pre_install`` replaced (validated)."""
    update: dict[str, Any] = {}
    if steps is not None:
        update["steps"] = Steps.model_validate(steps)
    if service is not None:
        update["service"] = Service.model_validate(service)
    if pre_install is not None:
        update["install"] = Install.model_validate(
            {**spec.config.install.model_dump(), "pre_install": pre_install})
    return AppSpec(spec.config.model_copy(update=update), spec.hosts, spec.source, spec.global_vars)


@pytest.fixture
def ssh_conn(monkeypatch: pytest.MonkeyPatch, fleet: Sandbox) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(fleet.connection_json))


def slow_request_to(fleet: Sandbox, spec: AppSpec, name: str) -> threading.Thread:
    """A 3 s request in flight on ``name`` (the only host in rotation while it starts)."""
    lb = load_balancer_for(spec)
    target = spec.host(name)
    for h in spec.hosts:
        if h is not target:
            fleet.haproxy(f"set server demo/{h.name} state maint")
    thread = threading.Thread(target=lambda: httpx.get(f"{fleet.frontend_url}/slow?seconds=3", timeout=20))
    thread.start()
    poll(lambda: lb.state(target).sessions == 1, 5, f"the slow request to reach {name}")
    for h in spec.hosts:
        if h is not target:
            fleet.haproxy(f"set server demo/{h.name} state ready")
    return thread


def test_pull_out_timeout_forces_maint_before_the_drain_timeout(fleet: Sandbox) -> None:
    spec = with_config(make_spec(fleet, {"drain_timeout": 30}), steps={"pull_out": {"timeout": 1}})
    thread = slow_request_to(fleet, spec, "host05")
    try:
        started = time.monotonic()
        step = pull_out(load_balancer_for(spec), spec, spec.host("host05"))
        took = time.monotonic() - started
    finally:
        thread.join(20)
    assert 1 <= took < 5, took
    assert step.detail == "steps.pull_out.timeout 1s with 1 sessions left; forced MAINT"
    assert haproxy_status(fleet, "host05") == "MAINT"


def test_pull_in_timeout_ends_the_wait_for_up_and_names_the_setting(fleet: Sandbox, ssh_conn: None) -> None:
    spec = with_config(make_spec(fleet, {"ready_timeout": 30}), steps={"pull_in": {"timeout": 1}})
    lb = load_balancer_for(spec)
    target = spec.host("host04")
    pull_out(lb, spec, target)
    demo_ctl(spec, target, "stop")
    started = time.monotonic()
    with pytest.raises(LoadBalancerError) as err:
        pull_in(lb, spec, target)
    assert time.monotonic() - started < 5
    assert "does not report host04 UP after 1s (steps.pull_in.timeout): DOWN" in str(err.value)


def test_pull_in_retried_passes_once_the_app_is_back(fleet: Sandbox, ssh_conn: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The first attempt meets a stopped app; while the step pauses, the app comes back (as a
    slow restart would); the retry finds HAProxy reporting the host UP."""
    spec = with_config(make_spec(fleet, {"ready_timeout": 30}),
                       steps={"pull_in": {"timeout": 3, "retries": 1}})
    lb = load_balancer_for(spec)
    target = spec.host("host06")
    pull_out(lb, spec, target)
    demo_ctl(spec, target, "stop")
    pauses: list[int] = []

    def app_back(attempt: int) -> float:
        pauses.append(attempt)
        demo_ctl(spec, target, "start")
        poll(lambda: app_healthy(target), 10, "host06 app health")
        return 0.0

    monkeypatch.setattr(policy, "pause", app_back)
    # The second attempt gets its own 3 s: HAProxy needs 2 checks 300 ms apart.
    step = pull_in(lb, spec, target)
    assert pauses == [1]
    assert step.state == "ok" and step.data["attempts"] == 2 and step.detail.endswith("(attempt 2 of 2)")
    assert haproxy_status(fleet, "host06") == "UP"


def test_activate_retried_after_a_start_that_failed(fleet: Sandbox, ssh_conn: None, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "pause", lambda attempt: 0.0)
    tried = tmp_path / "start-tried"  # the sandbox hosts share this machine's filesystem
    flaky_start = f"if [ -f {tried} ]; then {CTL} start; else touch {tried}; exit 1; fi"
    base = make_spec(fleet, config_dir=tmp_path)
    monkeypatch.setenv("TARS_ARTIFACT_CACHE_DIR", str(tmp_path / "cache"))
    spec = with_config(base, steps={"activate": {"retries": 1}},
                       service={"start": flaky_start, "stop": f"{CTL} stop", "status": f"{CTL} status"})
    host = spec.host("host02")
    art = fetch_artifact(spec, "2.0.0")
    with open_session(spec, host) as session:
        stage_release(session, spec, host, "2.0.0", art, "r1")
        step = activate_release(session, spec, host, "2.0.0", "r1")
        run_checks(session, spec, host, "2.0.0")
    assert step.state == "ok" and step.detail.endswith("(attempt 2 of 2)")
    served = httpx.get(f"http://{host.address}:{host.vars['app_port']}/", timeout=5).json()
    assert served["version"] == "2.0.0"


def test_a_repair_restarts_with_service_restart(fleet: Sandbox, ssh_conn: None, tmp_path: Path) -> None:
    """A host on its good release with the app down: the repair restarts it in place with the
    app's own restart command (not stop + start), checks it and puts it back in rotation."""
    log = tmp_path / "restarts.log"
    base = make_spec(fleet)
    spec = with_config(base, service={
        "start": f"{CTL} start", "stop": f"echo stop >> {log}; {CTL} stop", "status": f"{CTL} status",
        "restart": f"echo restart >> {log}; {CTL} stop; {CTL} start"})
    host = spec.host("host07")
    demo_ctl(spec, host, "stop")
    result = restore_host(spec, host, None, "repair-1", explicit="1.0.0")
    assert log.read_text().split() == ["restart"]
    activate = next(s for s in result["steps"] if s["step"] == "activate")
    assert activate["detail"] == "1.0.0 was current; restarted"
    assert result["version"] == "1.0.0" and app_healthy(host)
    assert haproxy_status(fleet, "host07") == "UP"


def test_stage_timeout_stops_a_stuck_install_and_leaves_no_release(
        fleet: Sandbox, ssh_conn: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARS_ARTIFACT_CACHE_DIR", str(tmp_path / "cache"))
    spec = with_config(make_spec(fleet, config_dir=tmp_path), steps={"stage": {"timeout": 2}},
                       pre_install=["sleep 60"])
    host = spec.host("host08")
    art = fetch_artifact(spec, "2.0.0")
    started = time.monotonic()
    with open_session(spec, host) as session, pytest.raises(RemoteCommandTimeout) as err:
        stage_release(session, spec, host, "2.0.0", art, "r1")
    assert time.monotonic() - started < 10
    assert str(err.value).startswith("host08: stage: timed out after 2s")
    assert not (Path(host.vars["deploy_root"]) / "releases" / "2.0.0").exists()


def test_activate_timeout_and_retries_on_a_restart_that_hangs(
        fleet: Sandbox, ssh_conn: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "pause", lambda attempt: 0.0)
    spec = with_config(make_spec(fleet), steps={"activate": {"timeout": 1.5, "retries": 1}}, service={
        "start": f"{CTL} start", "stop": f"{CTL} stop", "status": f"{CTL} status", "restart": "sleep 60"})
    host = spec.host("host09")
    started = time.monotonic()
    with open_session(spec, host) as session, pytest.raises(RemoteCommandTimeout) as err:
        activate_release(session, spec, host, "1.0.0", "r1", restore=True, restart=True)
    assert 3 <= time.monotonic() - started < 10  # two attempts of 1.5 s
    assert str(err.value).startswith("host09: activate: timed out after 1.5s")
    assert str(err.value).endswith("(failed 2 attempts; steps.activate.retries: 1)")
