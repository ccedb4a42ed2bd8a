"""Several hosts in one release task (``release.batch``), run for real by a local ``sh`` behind
the in-memory load balancer: each host's own result (steps, phases, reason), the brake read
before each host starts, and a retry that redoes only the hosts not yet released."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tars_operators.release import batch, hostflow, restore
from tars_operators.release.leases import RunLease
from tars_operators.release.machine import Brake
from tars_operators.steps.lease import Holder
from tars_operators.config.spec import AppSpec
from tests.unit.release.test_host_chain import CHAIN, NEW, OLD, Fleet, FlakyLB, LocalSession

pytestmark = pytest.mark.unit
HOSTS = ["host01", "host02", "host03"]


class Many(Fleet):
    """The three-host app with every host's deploy root, and this run's lease on them."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        # Three hosts at once in this small fleet: no capacity floor (the plan keeps it).
        c = self.spec.config
        config = c.model_copy(update={"traffic": c.traffic.model_copy(update={"min_in_service": 0})})
        self.spec = AppSpec(config=config, hosts=self.spec.hosts, source=self.spec.source)
        self.lb = FlakyLB(self.spec)
        for h in HOSTS[1:]:
            (root / h).mkdir()
        self.lease = RunLease(Holder("tars_deploy__demo", "run-1"), lambda holder: False, 0.0)
        self.started: list[str] = []
        self.lock = threading.Lock()
        self.new = self.artifact(NEW)  # one build: the same sha256 on every try

    def job_for(self, name: str) -> hostflow.HostJob:
        with self.lock:
            self.started.append(name)
        return hostflow.HostJob(spec=self.spec, host=self.spec.host(name), version=NEW,
                                run_id="run-1", artifact=self.new,
                                index=HOSTS.index(name), lease=self.lease)

    def serving_on(self, name: str) -> str:
        path = self.root / name / "running"
        return path.read_text().strip() if path.exists() else ""

    def put_everywhere(self, version: str) -> None:
        for name in HOSTS:
            job = hostflow.HostJob(spec=self.spec, host=self.spec.host(name), version=version,
                                   run_id="run-0", artifact=self.artifact(version))
            assert hostflow.run_until_health(job) is None
            hostflow.finish(job)
        self.lb.calls.clear()


@pytest.fixture
def many(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Many]:
    f = Many(tmp_path)
    monkeypatch.setattr(hostflow, "_lb", lambda spec: f.lb)
    monkeypatch.setattr(restore, "_lb", lambda spec: f.lb)
    monkeypatch.setattr("tars_operators.hooks.ssh.open_session",
                        lambda spec, host: LocalSession(host.name, tmp_path))
    f.put_everywhere(OLD)
    yield f


def no_brake() -> Brake | None:
    return None


def test_each_host_of_a_task_has_its_own_result(many: Many) -> None:
    out = batch.run_batch(HOSTS, threads=2, job=many.job_for, brake=no_brake)
    results = out.ordered(HOSTS)
    assert [r["host"] for r in results] == HOSTS
    for r in results:
        assert (r["state"], r["phases"], r["version"]) == ("ok", CHAIN, NEW)
        assert [s["step"] for s in r["steps"]][:3] == ["stage", "pull_out", "activate"]
        assert r["seconds"] > 0
    assert [many.serving_on(h) for h in HOSTS] == [NEW] * 3
    assert sorted(many.lb.calls) == sorted([("drain", h) for h in HOSTS] + [("enable", h) for h in HOSTS])


def test_one_failed_host_leaves_the_others_released_and_says_why(many: Many) -> None:
    (many.root / "host02" / "sick").touch()
    out = batch.run_batch(HOSTS, threads=3, job=many.job_for, brake=no_brake)
    bad = out.results["host02"]
    assert bad["state"] == "failed" and bad["phase"] == "failed"
    assert bad["message"].startswith("host02 failed@health: ")
    assert "OUT OF ROTATION" in bad["message"]
    assert [r["host"] for r in out.failed] == ["host02"]
    assert (out.results["host01"]["state"], out.results["host03"]["state"]) == ("ok", "ok")
    assert (many.serving_on("host01"), many.serving_on("host03")) == (NEW, NEW)


def test_a_retry_redoes_only_the_hosts_this_run_has_not_released(many: Many) -> None:
    (many.root / "host02" / "sick").touch()
    batch.run_batch(HOSTS, threads=3, job=many.job_for, brake=no_brake)
    (many.root / "host02" / "sick").unlink()
    many.lb.calls.clear()
    again = batch.run_batch(HOSTS, threads=3, job=many.job_for, brake=no_brake, retry=True)
    assert again.failed == [], [r.get("message") for r in again.failed]
    for h in ("host01", "host03"):
        r = again.results[h]
        assert (r["state"], r.get("skipped"), r["phase"]) == ("ok", True, "in rotation")
        assert r["detail"] == "already on 2.0.0 (good) and in rotation (released by this run)"
    assert again.results["host02"]["phases"] == CHAIN and "skipped" not in again.results["host02"]
    assert many.lb.calls == [("drain", "host02"), ("enable", "host02")]  # only host02 was touched
    assert [many.serving_on(h) for h in HOSTS] == [NEW] * 3


def test_a_brake_pulled_mid_task_holds_the_hosts_not_started(many: Many) -> None:
    reads: list[int] = []

    def brake() -> Brake | None:  # pulled once the first host has started
        reads.append(1)
        return Brake("ops", "smoke alarms", "now") if len(reads) > 1 else None

    out = batch.run_batch(HOSTS, threads=1, job=many.job_for, brake=brake)
    assert (out.held, out.brake and out.brake.reason) == (["host02", "host03"], "smoke alarms")
    assert [r["state"] for r in out.ordered(HOSTS)] == ["ok", "pending", "pending"]
    assert (many.serving_on("host02"), many.serving_on("host03")) == (OLD, OLD)
    assert many.started == ["host01"]
    # released: the task goes on with the held hosts only
    resumed = batch.run_batch(HOSTS, threads=1, job=many.job_for, brake=no_brake,
                              done=out.results)
    assert many.started == ["host01", "host02", "host03"]
    assert [r["state"] for r in resumed.ordered(HOSTS)] == ["ok"] * 3


def test_hosts_started_together_share_one_brake_read(many: Many) -> None:
    """Every free slot is filled after one read; a slot that frees later reads it again."""
    reads: list[list[str]] = []

    def brake() -> Brake | None:
        reads.append(list(many.started))  # who had started when the brake was read
        return None

    out = batch.run_batch(HOSTS, threads=2, job=many.job_for, brake=brake)
    assert [r["state"] for r in out.ordered(HOSTS)] == ["ok"] * 3
    assert reads == [[], ["host01", "host02"]]  # host01 and host02 at once, then host03


def test_a_brake_asking_for_rollback_leaves_the_hosts_not_started_untouched(many: Many) -> None:
    reads: list[Any] = []

    def brake() -> Brake | None:
        reads.append(1)
        return Brake("ops", "bad canary", "now", action="rollback") if len(reads) > 1 else None

    out = batch.run_batch(HOSTS, threads=1, job=many.job_for, brake=brake)
    assert [r["state"] for r in out.ordered(HOSTS)] == ["ok", "untouched", "untouched"]
    assert out.results["host03"]["detail"] == "brake asks for rollback (bad canary)"
    assert out.held == [] and many.serving_on("host03") == OLD
