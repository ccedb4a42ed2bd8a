"""The per-host chain (``release.hostflow``) run for real by a local ``sh`` on a temporary deploy
root, behind the in-memory load balancer: the phases it goes through are the machine's, in
order; a failure at any step names the host, the step and where the host stands, and a restore
brings it back; a brake asking for rollback leaves the host untouched."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tars_operators.config.schema import AppConfig
from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import LoadBalancerError, RemoteCommandError, TarsError
from tars_operators.hooks.artifacts import FetchedArtifact
from tars_operators.hooks.ssh import CommandResult, CommandsAhead
from tars_operators.release import hostflow, restore
from tars_operators.release.machine import (
    HOST_STEPS, HOST_TRANSITIONS, Brake, Decision, HostPhase, before_host, check_transition,
)
from tars_operators.results import StepResult
from tars_operators.steps.state import layout_for, read_host_state
from tests.unit.lb.conftest import MemoryLB

pytestmark = pytest.mark.unit
OLD, NEW = "1.0.0", "2.0.0"
CHAIN = ["pending", "staged", "out of rotation", "active", "healthy", "in rotation"]


class LocalSession(CommandsAhead):
    """The session interface the steps use (``run``, ``queue``, uploads, ``connect``), served by
    the local ``sh`` as sshd would; ``fail_step`` makes every command of that step exit 1."""

    def __init__(self, host: str, cwd: Path, fail_step: str | None = None) -> None:
        super().__init__()
        self.host, self.cwd, self.fail_step = host, cwd, fail_step
        self.steps: list[str] = []

    def __enter__(self) -> LocalSession:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def connect(self, step: str = "connect") -> None:
        return None

    def run(self, command: str, *, step: str, timeout: float | None = None, check: bool = True,
            label: str | None = None) -> CommandResult:
        self.steps.append(step)
        started = time.monotonic()
        if step == self.fail_step:
            raise RemoteCommandError(self.host, step, 1, "no space left on device")
        text, ahead, mark = self._with_ahead(command)
        proc = subprocess.run(["sh", "-c", text], cwd=self.cwd, capture_output=True, text=True,
                              timeout=60)
        out = proc.stdout
        if ahead:
            out = self._settle(ahead, mark, proc.returncode, out, proc.stderr,
                               time.monotonic() - started)
        if check and proc.returncode:
            raise RemoteCommandError(self.host, step, proc.returncode, proc.stderr)
        return CommandResult(proc.returncode, out, proc.stderr, time.monotonic() - started)

    def put_file(self, local: Path, remote: str, *, step: str, mode: int = 0o600) -> None:
        shutil.copyfile(local, remote)
        Path(remote).chmod(mode)

    def put_bytes(self, data: bytes, remote: str, *, step: str, mode: int = 0o600) -> None:
        Path(remote).write_bytes(data)
        Path(remote).chmod(mode)

    def remote_size(self, remote: str) -> int | None:
        path = Path(remote)
        return path.stat().st_size if path.exists() else None


class FlakyLB(MemoryLB):
    """The in-memory LB, refusing one operation (``drain`` or ``enable``) when asked to."""

    refuse: str | None = None

    def _set(self, op: str, host: Host, status: str) -> None:
        if op == self.refuse:
            raise LoadBalancerError(f"{host.name}: {op} refused by memory")
        super()._set(op, host, status)


class Fleet:
    """A three-host app whose hosts live under ``root``; the service is a ``running`` file and
    health/smoke read marker files a test drops to make them fail."""

    def __init__(self, root: Path) -> None:
        self.root = root
        config = AppConfig.model_validate({
            "app": {"name": "demo", "owner": "team"},
            "artifact": {"url": "http://a/demo-{{ version }}.tar.gz",
                         "checksum": {"url": "{{ url }}.sha256"}},
            "hosts": {"vars": {}},
            "install": {"deploy_root": str(root / "{{ host.name }}")},
            "service": {
                "start": "test ! -f {{ deploy_root }}/start-fails && "
                         "echo {{ version }} > {{ deploy_root }}/running",
                "stop": "rm -f {{ deploy_root }}/running",
            },
            "health": [{"kind": "command", "command": "test ! -f {{ deploy_root }}/sick && "
                        "test -f {{ deploy_root }}/running", "timeout": 0.5, "interval": 0.1}],
            "smoke": [{"kind": "command", "command": "test ! -f {{ deploy_root }}/smoke-fails",
                       "timeout": 0.5, "interval": 0.1}],
            "traffic": {"provider": "haproxy", "haproxy": {"socket": "/x", "backend": "demo"}},
        })
        hosts = tuple(Host(name=f"host{i:02d}", address=f"127.0.0.{10 + i}") for i in (1, 2, 3))
        self.spec = AppSpec(config=config, hosts=hosts, source=Path("/cfg/demo.yaml"))
        self.lb = FlakyLB(self.spec)
        self.host = hosts[0]
        (root / self.host.name).mkdir(parents=True)

    def artifact(self, version: str) -> FetchedArtifact:
        data = f"#!/bin/sh\necho {version}\n".encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("bin/app")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        path = self.root / f"demo-{version}.tar.gz"
        path.write_bytes(buf.getvalue())
        return FetchedArtifact(version, f"http://a/demo-{version}.tar.gz",
                               hashlib.sha256(buf.getvalue()).hexdigest(), path, len(buf.getvalue()))

    def job(self, version: str, run_id: str, fail_step: str | None = None) -> hostflow.HostJob:
        job = hostflow.HostJob(spec=self.spec, host=self.host, version=version, run_id=run_id,
                               artifact=self.artifact(version), index=0)
        job.session = LocalSession(self.host.name, self.root, fail_step)
        return job

    def release(self, version: str, run_id: str) -> hostflow.HostJob:
        job = self.job(version, run_id)
        assert hostflow.run_until_health(job) is None
        hostflow.finish(job)
        return job

    def marker(self, name: str) -> Path:
        return self.root / self.host.name / name

    def current(self) -> str | None:
        with LocalSession(self.host.name, self.root) as session:
            return read_host_state(session, layout_for(self.spec, self.host)).current

    def serving(self) -> str:
        """What the service runs, as its ``running`` file says ('' when stopped)."""
        path = self.marker("running")
        return path.read_text().strip() if path.exists() else ""


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    monkeypatch.setattr(hostflow, "_lb", lambda spec: f.lb)
    monkeypatch.setattr(restore, "_lb", lambda spec: f.lb)
    monkeypatch.setattr("tars_operators.hooks.ssh.open_session",
                        lambda spec, host: LocalSession(host.name, tmp_path))
    yield f


def test_a_release_goes_through_the_machines_phases_in_order(fleet: Fleet) -> None:
    job = fleet.release(NEW, "run-1")
    result = job.summary("ok")
    assert result["phases"] == CHAIN and result["phase"] == "in rotation"
    assert [s["step"] for s in result["steps"]] == [
        "stage", "pull_out", "activate", "health", "smoke", "mark", "pull_in", "prune"]
    assert set(result) >= {"host", "state", "version", "steps", "seconds"}  # what the views read
    assert (fleet.current(), fleet.serving(), fleet.lb.status["host01"]) == (NEW, NEW, "UP")
    assert fleet.lb.calls == [("drain", "host01"), ("enable", "host01")]


def fail_at(fleet: Fleet, step: str) -> str | None:
    """Arrange for ``step`` to fail on the next release; returns the session's failing step."""
    if step == "stage":
        return "stage"
    if step in ("pull_out", "pull_in"):
        fleet.lb.refuse = "drain" if step == "pull_out" else "enable"
    else:
        fleet.marker({"activate": "start-fails", "health": "sick",
                      "smoke": "smoke-fails"}[step]).touch()
    return None


# Each chain step, and how many of the chain's phases a host went through before it failed there.
FAILURES = [
    ("stage", 1), ("pull_out", 2), ("activate", 3), ("health", 4), ("smoke", 5), ("pull_in", 5),
]


def test_every_chain_step_has_a_failure_case() -> None:
    assert tuple(step for step, _ in FAILURES) == HOST_STEPS


@pytest.mark.parametrize(("step", "reached"), FAILURES)
def test_a_failure_at_each_step_names_the_host_and_a_restore_brings_it_back(
        fleet: Fleet, step: str, reached: int) -> None:
    fleet.release(OLD, "run-1")
    job = fleet.job(NEW, "run-2", fail_at(fleet, step))
    with pytest.raises(TarsError) as exc:
        if hostflow.run_until_health(job) is None:
            hostflow.finish(job)
    message = hostflow.failure(job, exc.value)

    assert job.failure_record(message)["phases"] == [*CHAIN[:reached], "failed"]
    out = step in ("activate", "health", "smoke", "pull_in")
    where = ("OUT OF ROTATION until rollback or repair" if out
             else "still in rotation on its previous release")
    assert message.startswith(f"host01 failed@{step}: ") and message.endswith(f"— host {where}")
    assert (fleet.lb.status["host01"] != "UP") is out

    fleet.lb.refuse = None
    for name in ("start-fails", "sick", "smoke-fails"):
        fleet.marker(name).unlink(missing_ok=True)
    result = restore.restore_host(fleet.spec, fleet.host, NEW, "rollback-1", undo_run="run-2")
    assert result["version"] == OLD
    assert (fleet.current(), fleet.serving(), fleet.lb.status["host01"]) == (OLD, OLD, "UP")


def test_a_brake_asking_for_rollback_leaves_the_next_host_untouched(fleet: Fleet) -> None:
    fleet.release(OLD, "run-1")
    calls = list(fleet.lb.calls)
    brake = Brake("ann", "payments down", "t", action="rollback")
    assert before_host(brake) is Decision.ROLLBACK
    assert before_host(Brake("ann", "db migration", "t")) is Decision.WAIT
    assert before_host(None) is Decision.CONTINUE
    result = hostflow.untouched("host01", 0, "brake asks for rollback (payments down)")
    assert (result["state"], result["phases"]) == ("untouched", ["pending", "untouched"])
    assert (fleet.current(), fleet.serving(), fleet.lb.calls) == (OLD, OLD, calls)


def test_a_resumed_chain_rebuilds_its_phases_from_the_steps_done(fleet: Fleet) -> None:
    first = fleet.job(NEW, "run-1")
    assert hostflow.run_until_health(first) is None
    done = [r.as_dict() for r in first.results if r.step != "health"]  # deferred health wait
    resumed = fleet.job(NEW, "run-1")
    resumed.restore(done)
    assert resumed.track.as_list() == CHAIN[:4]
    hostflow.health_event(resumed, {"status": "passed", "seconds": 1.5})
    hostflow.finish(resumed)
    assert resumed.summary("ok")["phases"] == CHAIN
    assert fleet.lb.status["host01"] == "UP"


def test_a_chain_run_out_of_order_is_an_illegal_transition(fleet: Fleet) -> None:
    job = fleet.job(NEW, "run-1")
    with pytest.raises(ValueError, match="host01: illegal transition pending → in rotation"):
        job.add(StepResult("host01", "pull_in", "ok", NEW, 0.0, "in rotation"), _Log())
    with pytest.raises(ValueError, match="illegal transition pending → healthy"):
        hostflow.finish(job)  # smoke before the release was even staged
    with pytest.raises(ValueError):
        check_transition(HOST_TRANSITIONS, HostPhase.UNTOUCHED, HostPhase.STAGED)


class _Log:
    def info(self, *args: Any) -> None:
        return None
