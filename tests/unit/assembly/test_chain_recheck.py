"""The release chain re-checks a host's requirements before its lease and pull-out: a host that
lost one since preflight fails at ``preflight``, still in rotation, nothing staged."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest

from tars_operators.config.runtime import PathRequirement, Runtime
from tars_operators.errors import TarsError
from tars_operators.release import hostflow
from tests.unit.release.test_host_chain import NEW, OLD, Fleet, LocalSession

pytestmark = pytest.mark.unit


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    need = PathRequirement(kind="path", path=str(tmp_path / "license.key"), type="file")
    f.spec = replace(f.spec, config=f.spec.config.model_copy(
        update={"runtime": Runtime(requires=(need,))}))
    f.lb.spec = f.spec
    monkeypatch.setattr(hostflow, "_lb", lambda spec: f.lb)
    monkeypatch.setattr("tars_operators.hooks.ssh.open_session",
                        lambda spec, host: LocalSession(host.name, tmp_path))
    yield f


def test_a_host_that_lost_a_requirement_fails_before_pull_out(fleet: Fleet, tmp_path: Path) -> None:
    (tmp_path / "license.key").touch()
    fleet.release(OLD, "run-1")
    (tmp_path / "license.key").unlink()
    job = fleet.job(NEW, "run-2")
    with pytest.raises(TarsError) as err:
        hostflow.run_until_health(job)
    message = hostflow.failure(job, err.value)
    assert message == (f"host01 failed@preflight: not ready, left in rotation: file "
                       f"{tmp_path}/license.key: found missing, expected file at "
                       f"{tmp_path}/license.key — host still in rotation on its previous release")
    assert job.steps_done == [] and fleet.lb.status["host01"] == "UP"
    assert fleet.current() == OLD and not (fleet.root / "host01" / "releases" / NEW).exists()
    (tmp_path / "license.key").touch()
    assert fleet.release(NEW, "run-3").steps_done[0] == "stage"
    assert fleet.current() == NEW
