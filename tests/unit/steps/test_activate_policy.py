"""activate on a real (local) deploy root: steps.activate.retries restarts a service that failed
to start, and service.restart replaces stop + start when the current release is restarted."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tars_operators.config.schema import AppConfig
from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import RemoteCommandError
from tars_operators.hooks.ssh import CommandResult
from tars_operators.steps import policy
from tars_operators.steps.activate import activate_release

pytestmark = pytest.mark.unit
# The service's commands log what ran, in the deploy root (activate runs them there).
STOP, START, RESTART = "echo stop >> service.log", "echo start >> service.log", "echo restart >> service.log"
# Fails the first time it runs, then starts: a service that needs a second try.
FLAKY_START = "if [ -f tried ]; then echo start >> service.log; else touch tried; exit 1; fi"


class LocalSession:
    """Runs each command with the local ``sh`` in the test's directory, as sshd would on a host."""

    host = "host01"

    def __init__(self, cwd: Path):
        self.cwd = cwd

    def run(self, command: str, *, step: str, check: bool = True, label: str | None = None,
            timeout: float | None = None) -> CommandResult:
        started = time.monotonic()
        proc = subprocess.run(["sh", "-c", command], cwd=self.cwd, capture_output=True, text=True, timeout=30)
        if check and proc.returncode:
            raise RemoteCommandError(self.host, step, proc.returncode, proc.stderr)
        return CommandResult(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def make(root: Path, service: dict[str, Any], steps: dict[str, Any] | None = None) -> tuple[AppSpec, Host]:
    config = AppConfig.model_validate({
        "app": {"name": "demo", "owner": "team"},
        "artifact": {"url": "http://a/demo-{{ version }}.tar.gz", "checksum": {"url": "{{ url }}.sha256"}},
        "hosts": {}, "install": {"deploy_root": "{{ vars.root }}"}, "service": service,
        "steps": steps or {},
    })
    host = Host(name="host01", address="127.0.0.11", vars={"root": str(root)})
    return AppSpec(config=config, hosts=(host,), source=Path("/cfg/demo.yaml")), host


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(policy, "pause", lambda attempt: 0.0)
    path = tmp_path / "srv" / "demo"
    for version in ("1.0.0", "2.0.0"):
        meta = path / "releases" / version / ".tars"
        meta.mkdir(parents=True)
        (meta / "release.json").write_text(json.dumps({"version": version, "sha256": "a" * 64,
                                                        "status": "good" if version == "1.0.0" else "staged"}))
    (path / "current").symlink_to("releases/1.0.0")
    return path


def log(root: Path) -> list[str]:
    return (root / "service.log").read_text().split() if (root / "service.log").exists() else []


def test_a_start_that_fails_once_is_retried_as_a_restart(root: Path) -> None:
    spec, host = make(root, {"start": FLAKY_START, "stop": STOP}, {"activate": {"retries": 1}})
    result = activate_release(LocalSession(root), spec, host, "2.0.0", "r1")
    assert result.state == "ok" and result.detail.endswith("(attempt 2 of 2)")
    assert (root / "current").readlink() == Path("releases/2.0.0")
    # 1st attempt: stop 1.0.0, switch, start fails; 2nd: stop the half-started 2.0.0, start.
    assert log(root) == ["stop", "stop", "start"]


def test_without_retries_the_failed_start_fails_the_step(root: Path) -> None:
    spec, host = make(root, {"start": FLAKY_START, "stop": STOP})
    with pytest.raises(RemoteCommandError, match="host01: activate: exit code 1"):
        activate_release(LocalSession(root), spec, host, "2.0.0", "r1")
    assert log(root) == ["stop"]


def test_service_restart_replaces_stop_and_start_for_the_current_release(root: Path) -> None:
    spec, host = make(root, {"start": START, "stop": STOP, "restart": RESTART})
    session = LocalSession(root)
    result = activate_release(session, spec, host, "1.0.0", "r1", restore=True, restart=True)
    assert result.detail == "1.0.0 was current; restarted" and log(root) == ["restart"]
    activate_release(session, spec, host, "2.0.0", "r2")  # a switch stops the old, starts the new
    assert log(root) == ["restart", "stop", "start"]


def test_without_service_restart_a_restart_is_stop_then_start(root: Path) -> None:
    spec, host = make(root, {"start": START, "stop": STOP})
    activate_release(LocalSession(root), spec, host, "1.0.0", "r1", restore=True, restart=True)
    assert log(root) == ["stop", "start"]
