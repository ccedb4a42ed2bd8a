"""What prepare and the inspect DAG record of each host's readiness for the App view: the XCom
``readiness`` prepare pushes (refused or not) and the ``readiness`` of each refresh report,
checked for real by a local ``sh`` standing in for sshd."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tars_operators.assembly import preflight as pf
from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import PlanError
from tars_operators.operators.inspect import inspect_hosts
from tars_operators.operators.prepare import PrepareOperator
from tests.unit.assembly.test_assembly import make_spec
from tests.unit.release.test_host_chain import LocalSession

pytestmark = pytest.mark.unit
LOG = logging.getLogger(__name__)
OLD = {"kind": "command", "command": "python3", "version": ">= 99.1"}


@pytest.fixture
def local_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """SSH sessions served by the local ``sh``; ``fail[host] = step`` makes that step fail."""
    fail: dict[str, str] = {}

    def open_session(spec: AppSpec, host: Host) -> LocalSession:
        return LocalSession(host.name, tmp_path, fail_step=fail.get(host.name))

    monkeypatch.setattr("tars_operators.hooks.ssh.open_session", open_session)
    return fail


class TI:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def run_preflight(spec: AppSpec) -> tuple[TI, Any]:
    """prepare's preflight step on a plan of both hosts; (the task instance, its result)."""
    me = SimpleNamespace(log=LOG, slots=[], canary=False)
    plan = SimpleNamespace(all_hosts=("host01", "host02"), version="2.0.0")
    ti = TI()
    try:
        return ti, PrepareOperator._preflight(me, spec, plan, {"ti": ti})  # type: ignore[arg-type]
    except PlanError as exc:
        return ti, exc


def test_prepare_records_each_hosts_readiness_even_when_it_refuses(
        tmp_path: Path, local_hosts: dict[str, str]) -> None:
    (tmp_path / "host01").mkdir()  # host02 has no deploy root
    spec = make_spec(tmp_path, {"requires": [{"kind": "writable"}, OLD]})
    ti, result = run_preflight(spec)
    assert isinstance(result, PlanError) and "no host left rotation" in str(result)
    record = ti.pushed[pf.READINESS]
    assert record["checked_at"].endswith("+00:00")
    h1, h2 = record["hosts"]["host01"], record["hosts"]["host02"]
    assert h1["ready"] is False and h1["error"] is None
    [python] = h1["missing"]
    assert python.startswith("python3 >= 99.1 (found 3.") and "python3)" in python
    assert h2["missing"][0] == "writable deploy root (found missing)"


def test_prepare_records_ready_hosts_and_an_unreachable_one(
        tmp_path: Path, local_hosts: dict[str, str]) -> None:
    (tmp_path / "host01").mkdir()
    local_hosts["host02"] = pf.STEP  # its check fails like a dropped connection
    spec = make_spec(tmp_path, {"requires": [{"kind": "writable"}]})
    ti, (plan, lines) = run_preflight(spec)
    assert plan.all_hosts == ("host01", "host02")  # an unreachable host is its chain's to fail
    hosts = ti.pushed[pf.READINESS]["hosts"]
    assert hosts["host01"] == {"ready": True, "missing": [], "error": None}
    assert hosts["host02"]["ready"] is False and "no space left" in hosts["host02"]["error"]


def test_prepare_records_nothing_for_an_app_without_requirements(
        tmp_path: Path, local_hosts: dict[str, str]) -> None:
    ti, (plan, lines) = run_preflight(make_spec(tmp_path, {}))
    assert ti.pushed == {} and lines == []


def test_a_refresh_reports_readiness_beside_the_read(
        tmp_path: Path, local_hosts: dict[str, str]) -> None:
    (tmp_path / "host01").mkdir()
    (tmp_path / "host02").mkdir()
    spec = make_spec(tmp_path, {"requires": [{"kind": "writable"}, OLD]},
                     groups={"dc2": {"runtime": {"requires": []}}})  # host02 requires nothing
    result = inspect_hosts(spec, ["host01", "host02"], log=LOG)
    h1, h2 = result["hosts"]
    assert h1["host"] == "host01" and h1["error"] == "" and h1["version"] is None
    assert h1["readiness"]["ready"] is False
    assert h1["readiness"]["missing"][0].startswith("python3 >= 99.1 (found 3.")
    assert "readiness" not in h2  # no requirements: nothing to show


def test_a_refresh_that_cannot_check_or_read_a_host_says_why(
        tmp_path: Path, local_hosts: dict[str, str]) -> None:
    (tmp_path / "host01").mkdir()
    spec = make_spec(tmp_path, {"requires": [{"kind": "writable"}]})
    local_hosts["host01"] = pf.STEP  # the read works, the check fails
    local_hosts["host02"] = "inspect"  # nothing can be read
    h1, h2 = inspect_hosts(spec, ["host01", "host02"], log=LOG)["hosts"]
    assert h1["error"] == "" and "no space left" in h1["readiness"]["error"]
    assert h2["error"] and h2["readiness"] == {"ready": False, "missing": [], "error": h2["error"]}
