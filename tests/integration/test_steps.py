"""Release steps against the sandbox's real sshd, demo app and artifact server."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest

from sandbox import Sandbox
from tars_operators.config.schema import AppConfig, HttpCheck
from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import ChecksumMismatch, HealthCheckFailed, InvalidValue, RemoteCommandError, UnsafeArchive
from tars_operators.hooks.artifacts import FetchedArtifact, fetch_artifact
from tars_operators.hooks.ssh import HostSession, SessionParams, open_session
from tars_operators.steps.activate import activate_release, mark_release, prune_releases
from tars_operators.steps.checks import run_checks
from tars_operators.steps.stage import stage_release
from tars_operators.steps.state import layout_for, previous_good, read_host_state
from tars_operators.triggers.health import HealthCheckTrigger
from tests.polling import poll

pytestmark = pytest.mark.integration
APP_JSON = '{"address": "{{ host.address }}", "port": {{ vars.app_port }}, "host": "{{ host.name }}"}\n'
HOSTILE = ["1.0;touch /tmp/pwned", "$(id)", "../../x", "`touch /tmp/pwned`", "1.0\ntouch /tmp/pwned"]


def demo_spec(sb: Sandbox, config_dir: Path, **overrides: Any) -> AppSpec:
    """The demo app on the sandbox: push delivery, config/app.json rendered from a template."""
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "app.json.j2").write_text(APP_JSON)
    ctl = "{{ deploy_root }}/current/bin/demo-ctl"
    raw: dict[str, Any] = {
        "app": {"name": "demo", "owner": "tests"},
        "artifact": {"url": "{{ vars.artifact_base }}/demo-{{ version }}.tar.gz",
                     "checksum": {"url": "{{ url }}.sha256"}},
        "hosts": {},
        "ssh": {"conn_id": "tars_sandbox", "connect_timeout": 5, "command_timeout": 60},
        "install": {"deploy_root": "{{ vars.deploy_root }}", "keep_releases": 3,
                    "templates": [{"src": "app.json.j2", "dest": "config/app.json"}]},
        "service": {"start": f"{ctl} start", "stop": f"{ctl} stop", "status": f"{ctl} status"},
        "health": [{"kind": "http", "url": "http://{{ host.address }}:{{ vars.app_port }}/health",
                    "interval": 0.1, "timeout": 15, "successes": 2}],
        "smoke": [{"kind": "http", "url": "http://{{ host.address }}:{{ vars.app_port }}/",
                   "expect_body": "{{ version }}"},
                  {"kind": "command", "command": f"{ctl} status"}],
    }
    for key, value in overrides.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    hosts = tuple(Host(h.name, h.address, h.ssh_port, h.group,
                       MappingProxyType({"deploy_root": str(h.deploy_root), "app_port": h.app_port}))
                  for h in sb.hosts)
    os.environ["AIRFLOW_CONN_TARS_SANDBOX"] = json.dumps(sb.connection_json)
    return AppSpec(AppConfig.model_validate(raw), hosts, config_dir / "demo.yaml",
                   MappingProxyType({"artifact_base": sb.artifact_base}))


def served(host: Host) -> dict[str, Any]:
    return httpx.get(f"http://{host.address}:{host.vars['app_port']}/", timeout=5).json()


def root_of(host: Host) -> Path:
    return Path(host.vars["deploy_root"])


def release_host(spec: AppSpec, host: Host, version: str, art: FetchedArtifact | None, run_id: str = "r1") -> list[str]:
    """stage → activate → health → smoke → mark good, as the release will; returns the states."""
    with open_session(spec, host) as s:
        results = [stage_release(s, spec, host, version, art, run_id),
                   activate_release(s, spec, host, version, run_id),
                   run_checks(s, spec, host, version), run_checks(s, spec, host, version, kind="smoke"),
                   mark_release(s, spec, host, version, "good")]
    return [r.state for r in results]


@pytest.fixture
def spec(fleet: Sandbox, tmp_path: Path) -> AppSpec:
    os.environ["TARS_CACHE_DIR"] = str(tmp_path / "cache")
    return demo_spec(fleet, tmp_path / "config")


def test_stage_activate_health_on_three_hosts_then_nothing_changes(spec: AppSpec) -> None:
    hosts = list(spec.hosts[:3])
    art = fetch_artifact(spec, "2.0.0")
    with ThreadPoolExecutor(3) as pool:
        states = list(pool.map(lambda h: release_host(spec, h, "2.0.0", art), hosts))
    assert states == [["ok", "ok", "ok", "ok", "ok"]] * 3
    before = {}
    for h in hosts:
        assert served(h) == {"app": "demo", "version": "2.0.0", "host": h.name}
        root = root_of(h)
        assert os.readlink(root / "current") == "releases/2.0.0"
        meta = json.loads((root / "releases/2.0.0/.tars/release.json").read_text())
        assert meta["status"] == "good" and meta["sha256"] == art.sha256 and meta["activated_at"]
        assert json.loads((root / "releases/2.0.0/config/app.json").read_text())["host"] == h.name
        before[h.name] = ((root / "releases/2.0.0").stat().st_mtime_ns, (root / "shared/demo.pid").read_text())
    with ThreadPoolExecutor(3) as pool:
        again = list(pool.map(lambda h: release_host(spec, h, "2.0.0", art, "r2"), hosts))
    assert [s[:2] for s in again] == [["unchanged", "unchanged"]] * 3 and [s[4] for s in again] == ["unchanged"] * 3
    for h in hosts:
        root = root_of(h)
        assert ((root / "releases/2.0.0").stat().st_mtime_ns, (root / "shared/demo.pid").read_text()) == before[h.name]
    with open_session(spec, hosts[0]) as s:  # the host says what its previous good release is
        assert previous_good(read_host_state(s, layout_for(spec, hosts[0])), exclude="2.0.0") == "1.0.0"


def test_corrupt_artifact_fails_clearly_and_changes_nothing(spec: AppSpec, tmp_path: Path) -> None:
    host = spec.hosts[0]
    wrong = spec.config.model_copy(update={"artifact": spec.config.artifact.model_copy(
        update={"checksum": spec.config.artifact.checksum.model_copy(update={"sha256": {"2.0.0": "0" * 64}})})})
    bad_spec = AppSpec(wrong, spec.hosts, spec.source, spec.global_vars)
    listing = sorted(p.name for p in (root_of(host) / "releases").iterdir())
    with pytest.raises(ChecksumMismatch, match="sha256 is .*expected 0000"):
        fetch_artifact(bad_spec, "2.0.0")
    # A local copy that does not match what fetch resolved (rotted, or fetched on another
    # worker) is downloaded again and verified: an artifact changed since fetch is refused
    # before anything is sent.
    art = fetch_artifact(spec, "2.0.0")
    rotten = tmp_path / "rotten.tar.gz"
    rotten.write_bytes(art.path.read_bytes()[:-10] + b"0123456789")  # type: ignore[union-attr]
    changed = FetchedArtifact("2.0.0", art.url, "2" * 64, rotten, art.size)
    with open_session(spec, host) as s, pytest.raises(ChecksumMismatch, match="nothing was sent to any host"):
        stage_release(s, spec, host, "2.0.0", changed, "r1")
    # Pull delivery: the host downloads and verifies; a wrong sha256 stops it there.
    pulled = FetchedArtifact("2.0.0", art.url, "1" * 64)
    with open_session(spec, host) as s, pytest.raises(RemoteCommandError, match="(?s)exit code 65.*sha256 mismatch"):
        stage_release(s, spec, host, "2.0.0", pulled, "r1")
    assert sorted(p.name for p in (root_of(host) / "releases").iterdir()) == listing
    assert os.readlink(root_of(host) / "current") == "releases/1.0.0" and served(host)["version"] == "1.0.0"


class NoConnection(HostSession):
    def connect(self, step: str = "connect") -> Any:
        raise AssertionError(f"an SSH connection was attempted ({step})")


@pytest.mark.parametrize("version", HOSTILE)
def test_hostile_versions_are_rejected_before_any_ssh_call(spec: AppSpec, version: str) -> None:
    host = spec.hosts[0]
    pwned_before = Path("/tmp/pwned").exists()
    session = NoConnection(SessionParams.for_host(spec, host))
    art = FetchedArtifact("1.1.0", "http://127.0.0.1:1/x", "a" * 64)
    for call in (lambda: stage_release(session, spec, host, version, art, "r1"),
                 lambda: stage_release(session, spec, host, version, None, "r1"),
                 lambda: activate_release(session, spec, host, version, "r1"),
                 lambda: run_checks(session, spec, host, version),
                 lambda: mark_release(session, spec, host, version, "good")):
        with pytest.raises(InvalidValue, match="not allowed"):
            call()
    with open_session(spec, host) as real:  # the real session never connected either
        with pytest.raises(InvalidValue):
            stage_release(real, spec, host, version, None, "r1")
        assert real._hook is None
    assert Path("/tmp/pwned").exists() == pwned_before
    assert not list((root_of(host) / "releases").glob("*id*"))
    assert sorted(p.name for p in (root_of(host) / "releases").iterdir()) == ["1.0.0"]


def evil_tarball(path: Path, name: str) -> tuple[Path, str]:
    with tarfile.open(path, "w:gz") as tar:
        for member in ("VERSION", name):
            info = tarfile.TarInfo(member)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"x\n"))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["../escaped", "/tmp/tars-absolute-escape", "a/../../escaped"])
def test_tarball_escaping_the_release_dir_is_refused(fleet: Sandbox, spec: AppSpec, tmp_path: Path, name: str) -> None:
    host = spec.hosts[0]
    path, sha = evil_tarball(tmp_path / "evil.tar.gz", name)
    with open_session(spec, host) as s:
        with pytest.raises(UnsafeArchive, match="refusing unsafe archive"):
            stage_release(s, spec, host, "6.6.6", FetchedArtifact("6.6.6", "file:///x", sha, path, path.stat().st_size), "r1")
        assert s._hook is None  # refused on the controller
        # Pull delivery: the host downloads it and checks it itself before unpacking.
        (fleet.artifacts_dir / "demo-6.6.6.tar.gz").write_bytes(path.read_bytes())
        try:
            url = f"{fleet.artifact_base}/demo-6.6.6.tar.gz"
            with pytest.raises(RemoteCommandError, match="(?s)exit code 66.*refusing unsafe archive"):
                stage_release(s, spec, host, "6.6.6", FetchedArtifact("6.6.6", url, sha), "r1")
        finally:
            (fleet.artifacts_dir / "demo-6.6.6.tar.gz").unlink()
    root = root_of(host)
    assert not (root / "releases/6.6.6").exists() and not (root / "escaped").exists()
    assert not (root.parent / "escaped").exists() and not Path("/tmp/tars-absolute-escape").exists()


CHILD = """
import importlib.util, json, os, sys
from pathlib import Path
sys.path[:0] = [{repo!r}, {repo!r} + "/plugins"]
spec_ = importlib.util.spec_from_file_location("t", {test_file!r})
mod = importlib.util.module_from_spec(spec_); spec_.loader.exec_module(mod)
from sandbox import Sandbox
from tars_operators.hooks.ssh import open_session
from tars_operators.steps.stage import stage_release
spec = mod.demo_spec(Sandbox.load({sb_dir!r}), Path({config_dir!r}), install={install!r})
host = spec.hosts[0]
with open_session(spec, host) as s:
    print(stage_release(s, spec, host, "2.1.0", None, "killed-run"), flush=True)
"""


def test_killed_mid_stage_keeps_old_release_and_retry_finishes(fleet: Sandbox, spec: AppSpec, tmp_path: Path) -> None:
    host = spec.hosts[0]
    root, marker = root_of(host), tmp_path / "slow-marker"
    marker.write_text("")
    # A pre_install that hangs while the marker exists: the step is killed while it runs.
    install = {"pre_install": [f"while [ -e {marker} ]; do sleep 0.05; done; sleep 0.01"]}
    slow = demo_spec(fleet, tmp_path / "config", install=install)
    code = CHILD.format(repo=str(Path(__file__).resolve().parents[2]), test_file=__file__, sb_dir=str(fleet.dir),
                        config_dir=str(tmp_path / "config"), install=install)
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "TARS_CACHE_DIR": str(tmp_path / "cache")},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    poll(lambda: list((root / "releases").glob(".tmp-2.1.0-*/VERSION")) or child.poll() is not None, 30, "unpack")
    assert child.poll() is None, child.stderr.read().decode()  # type: ignore[union-attr]
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    # The remote script notices the controller is gone and stops (no unattended finish).
    poll(lambda: not _remote_waiters(marker), 10, "the orphaned remote script to stop")
    assert os.readlink(root / "current") == "releases/1.0.0" and served(host)["version"] == "1.0.0"
    assert not (root / "releases/2.1.0").exists()
    marker.unlink()
    assert release_host(slow, host, "2.1.0", None, "retry") == ["ok", "ok", "ok", "ok", "ok"]
    assert served(host)["version"] == "2.1.0" and not list((root / "releases").glob(".tmp-*"))


def _remote_waiters(marker: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"while \\[ -e {marker}"], capture_output=True, text=True).stdout
    return out.split()


def broken_health(spec: AppSpec, timeout: float) -> list[HttpCheck]:
    return [HttpCheck(kind="http", url="http://{{ host.address }}:{{ vars.app_port }}/health",
                      interval=0.2, timeout=timeout, successes=2)]


def test_broken_version_times_out_with_last_response_then_rolls_back(spec: AppSpec) -> None:
    host = spec.hosts[1]
    with open_session(spec, host) as s:
        stage_release(s, spec, host, "2.0.0-broken", None, "r1")
        activate_release(s, spec, host, "2.0.0-broken", "r1")
        started = time.monotonic()
        with pytest.raises(HealthCheckFailed) as err:
            run_checks(s, spec, host, "2.0.0-broken", broken_health(spec, 2.0))
        assert time.monotonic() - started < 4
        assert "HTTP 503" in str(err.value) and "unhealthy: broken build" in str(err.value)
        assert err.value.host == host.name
        mark_release(s, spec, host, "2.0.0-broken", "failed")
        state = read_host_state(s, layout_for(spec, host))
        target = previous_good(state, exclude="2.0.0-broken")
        assert target == "1.0.0"
        assert activate_release(s, spec, host, target, "r1").state == "ok"
        run_checks(s, spec, host, target)
        assert prune_releases(s, spec, host).data["removed"] == ["2.0.0-broken"]
    assert served(host)["version"] == "1.0.0"


def test_slow_start_version_passes_once_up(spec: AppSpec) -> None:
    host = spec.hosts[2]
    assert release_host(spec, host, "2.0.0-slow", None) == ["ok", "ok", "ok", "ok", "ok"]
    assert served(host)["version"] == "2.0.0-slow"


def test_trigger_waits_async_for_slow_and_reports_broken(spec: AppSpec) -> None:
    slow_host, broken_host = spec.hosts[3], spec.hosts[4]
    for host, version in ((slow_host, "2.0.0-slow"), (broken_host, "2.0.0-broken")):
        with open_session(spec, host) as s:
            stage_release(s, spec, host, version, None, "r1")
            activate_release(s, spec, host, version, "r1")
    from tars_operators.config.schema import CommandCheck

    checks = [*broken_health(spec, 15.0),
              CommandCheck(kind="command", command="{{ deploy_root }}/current/bin/demo-ctl status", timeout=10)]
    slow = HealthCheckTrigger.for_host(spec, slow_host, "2.0.0-slow", checks)
    broken = HealthCheckTrigger.for_host(spec, broken_host, "2.0.0-broken", broken_health(spec, 2.0))
    classpath, kwargs = broken.serialize()
    assert classpath == "tars_operators.triggers.health.HealthCheckTrigger"
    broken = HealthCheckTrigger(**kwargs)

    async def first(trigger: HealthCheckTrigger) -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    async def both() -> list[dict[str, Any]]:
        return list(await asyncio.gather(first(slow), first(broken)))

    passed, failed = asyncio.run(both())
    assert passed["status"] == "passed" and passed["checks"][1]["last"].startswith("exit 0")
    assert failed["status"] == "failed" and "HTTP 503" in failed["message"]
    assert "unhealthy: broken build" in failed["message"]


def test_pull_delivery_host_downloads_and_verifies(fleet: Sandbox, tmp_path: Path) -> None:
    pull = demo_spec(fleet, tmp_path / "config", artifact={"delivery": "pull"})
    host = pull.hosts[5]
    art = fetch_artifact(pull, "1.1.0")
    assert art.path is None
    assert release_host(pull, host, "1.1.0", art) == ["ok", "ok", "ok", "ok", "ok"]
    assert served(host)["version"] == "1.1.0"
    assert not list((root_of(host) / ".tars-tmp").iterdir())


def test_operators_and_deferrable_sensor_outside_airflow(spec: AppSpec) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    from tars_operators.operators.steps import (
        ActivateReleaseOperator,
        FetchArtifactOperator,
        PruneReleasesOperator,
        SmokeTestOperator,
        StageReleaseOperator,
    )
    from tars_operators.sensors.health import HealthCheckSensor

    host, ctx = spec.hosts[6], {"run_id": "op-run"}
    common = {"spec_loader": lambda: spec, "version": "2.1.0"}
    fetched = FetchArtifactOperator(task_id="fetch", **common).execute(ctx)
    staged = StageReleaseOperator(task_id="stage", host_name=host.name, artifact=fetched, **common).execute(ctx)
    assert staged["state"] == "ok" and staged["data"]["delivery"] == "pushed"
    assert ActivateReleaseOperator(task_id="act", host_name=host.name, **common).execute(ctx)["state"] == "ok"
    sensor = HealthCheckSensor(task_id="health", host_name=host.name, **common)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(ctx)

    async def first() -> dict[str, Any]:
        async for event in deferred.value.trigger.run():
            return event.payload
        raise AssertionError("no event")

    result = sensor.execute_complete(ctx, asyncio.run(first()))
    assert result["state"] == "ok" and result["step"] == "health"
    smoke = SmokeTestOperator(task_id="smoke", host_name=host.name, **common).execute(ctx)
    assert [c["ok"] for c in smoke["data"]["checks"]] == [True, True]
    pruned = PruneReleasesOperator(task_id="prune", host_name=host.name, spec_loader=lambda: spec).execute(ctx)
    assert pruned["state"] == "unchanged"
