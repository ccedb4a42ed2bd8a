"""pull_out / pull_in / capacity / rotation report logic, on an in-memory LB and `provider: none`."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tars_operators.errors import CapacityError, InvalidValue, LoadBalancerError
from tars_operators.hooks.lb import load_balancer_for, server_name
from tars_operators.hooks.lb.base import ServerState
from tars_operators.steps.traffic import (
    check_capacity,
    pull_in,
    pull_out,
    required_in_service,
    rotation_report,
)
from tests.unit.lb.conftest import MakeSpec, MemoryLB

pytestmark = pytest.mark.unit
TRAFFIC = {"provider": "haproxy", "haproxy": {"socket": "/x", "backend": "demo"}}


@pytest.mark.parametrize(("floor", "total", "need"), [
    ("50%", 10, 5), ("50%", 5, 3), ("75%", 10, 8), ("100%", 3, 3), ("0%", 4, 0), ("1%", 10, 1),
    (3, 10, 3), (0, 10, 0), (12, 10, 12),
])
def test_required_in_service_rounds_percentages_up(floor: int | str, total: int, need: int) -> None:
    assert required_in_service(floor, total) == need


def test_capacity_counts_hosts_already_out(make_spec: MakeSpec, memory_lb: Callable[..., MemoryLB]) -> None:
    spec = make_spec({**TRAFFIC, "min_in_service": "50%"}, hosts=10)
    lb = memory_lb(spec, {"host01": "MAINT", "host02": "DOWN", "host03": "DRAIN"})
    check_capacity(lb, spec, ["host04", "host05"])  # 10 - 3 - 2 = 5 >= 5
    with pytest.raises(CapacityError) as err:
        check_capacity(lb, spec, ["host04", "host05", "host06"])
    assert str(err.value) == (
        "demo: taking out host04, host05, host06 would leave 4 of 10 hosts in service; "
        "traffic.min_in_service is '50%' (5 hosts). Already out per memory: host01 (MAINT), "
        "host02 (DOWN), host03 (DRAIN). Bring those back into rotation or release fewer hosts at once.")


def test_capacity_allows_hosts_that_are_already_out(make_spec: MakeSpec, memory_lb: Callable[..., MemoryLB]) -> None:
    spec = make_spec({**TRAFFIC, "min_in_service": 3}, hosts=4)
    lb = memory_lb(spec, {"host01": "DOWN", "host02": "MAINT"})
    check_capacity(lb, spec, ["host01"])  # changes nothing
    with pytest.raises(CapacityError, match="would leave 1 of 4"):
        check_capacity(lb, spec, ["host03"])


def test_capacity_unknown_host(make_spec: MakeSpec, memory_lb: Callable[..., MemoryLB]) -> None:
    spec = make_spec(TRAFFIC, hosts=2)
    with pytest.raises(InvalidValue, match="unknown host 'web9' for app demo; hosts: host01, host02"):
        check_capacity(memory_lb(spec), spec, ["web9"])


def test_pull_out_then_in(make_spec: MakeSpec, memory_lb: Callable[..., MemoryLB]) -> None:
    spec = make_spec(TRAFFIC, hosts=4)
    lb = memory_lb(spec)
    out = pull_out(lb, spec, spec.hosts[0])
    assert (out.state, out.step, out.host) == ("ok", "pull_out", "host01")
    assert out.data["status"] == "DRAIN" and out.data["forced_maint"] is False
    back = pull_in(lb, spec, spec.hosts[0])
    assert back.state == "ok" and back.data["status"] == "UP"
    assert lb.calls == [("drain", "host01"), ("enable", "host01")]


def test_drain_timeout_forces_maint(make_spec: MakeSpec, memory_lb: Callable[..., MemoryLB]) -> None:
    spec = make_spec({**TRAFFIC, "drain_timeout": 0.05}, hosts=4)
    lb = memory_lb(spec)
    lb.sessions["host02"] = 2
    out = pull_out(lb, spec, spec.hosts[1])
    assert out.data["forced_maint"] is True and out.data["status"] == "MAINT"
    assert out.detail == "drain timeout 0.05s with 2 sessions left; forced MAINT"


def test_pull_out_backs_off_when_a_concurrent_drain_broke_the_floor(
        make_spec: MakeSpec, memory_lb: Callable[..., MemoryLB]) -> None:
    spec = make_spec({**TRAFFIC, "min_in_service": 3}, hosts=4)
    lb = memory_lb(spec)
    real_drain = lb.drain

    def drain_and_race(host):  # another worker drains host04 between our check and our drain
        real_drain(host)
        lb.status["host04"] = "DRAIN"

    lb.drain = drain_and_race  # type: ignore[method-assign]
    with pytest.raises(CapacityError, match="would leave 2 of 4"):
        pull_out(lb, spec, spec.hosts[0])
    assert lb.status["host01"] == "UP"


def test_pull_out_of_a_host_in_maint_changes_nothing(make_spec: MakeSpec, memory_lb: Callable[..., MemoryLB]) -> None:
    spec = make_spec(TRAFFIC, hosts=4)
    lb = memory_lb(spec, {"host01": "MAINT"})
    assert pull_out(lb, spec, spec.hosts[0]).state == "unchanged"
    assert lb.calls == []


def test_pull_in_fails_with_what_the_lb_says(make_spec: MakeSpec, memory_lb: Callable[..., MemoryLB]) -> None:
    spec = make_spec({**TRAFFIC, "ready_timeout": 0.05}, hosts=2)
    lb = memory_lb(spec)
    lb.enable = lambda host: lb.status.__setitem__(host.name, "DOWN")  # type: ignore[method-assign]
    with pytest.raises(LoadBalancerError) as err:
        pull_in(lb, spec, spec.hosts[1])
    assert str(err.value).startswith(
        "host02: pull_in: memory does not report host02 UP after 0.05s (traffic.ready_timeout): "
        "DOWN (admin ready, 0 sessions, check L4CON)")


def test_rotation_report(make_spec: MakeSpec, memory_lb: Callable[..., MemoryLB]) -> None:
    spec = make_spec(TRAFFIC, hosts=3)
    lb = memory_lb(spec)
    assert rotation_report(lb, spec, spec.hosts).summary() == "all 3 hosts in rotation"
    lb.status["host02"] = "DOWN"
    report = rotation_report(lb, spec, spec.hosts)
    assert not report.ok
    assert report.summary() == ("1 of 3 hosts NOT in rotation:\n"
                                "  host02: DOWN (admin ready, 0 sessions, check L4CON)")


def test_provider_none_skips_everything(make_spec: MakeSpec) -> None:
    spec = make_spec({"provider": "none"}, hosts=2)
    lb = load_balancer_for(spec)
    assert pull_out(lb, spec, spec.hosts[0]).state == "skipped"
    assert pull_in(lb, spec, spec.hosts[0]).state == "skipped"
    check_capacity(lb, spec, ["host01", "host02"])
    assert rotation_report(lb, spec, spec.hosts).summary() == "rotation not checked (traffic.provider: none)"


def test_command_without_state_waits_drain_timeout_and_says_unverified(
        make_spec: MakeSpec, caplog: pytest.LogCaptureFixture) -> None:
    spec = make_spec({"provider": "command", "drain_timeout": 0.4,
                      "command": {"drain": "true", "enable": "true"}}, hosts=2)
    lb = load_balancer_for(spec)
    out = pull_out(lb, spec, spec.hosts[0])
    assert out.state == "ok" and out.data["verified"] is False
    assert out.seconds >= 0.4, "reported drained before requests in flight had drain_timeout"
    assert out.detail == ("drained via traffic.command (run on the controller); waited "
                          "traffic.drain_timeout (0.4s); unverified: the LB does not report state")
    assert "host01: traffic.command has no `state` command: cannot verify the drain" in caplog.text
    back = pull_in(lb, spec, spec.hosts[0])
    assert back.data["verified"] is False and back.seconds < 0.4


def test_command_with_state_polls_it_until_drained(make_spec: MakeSpec, tmp_path) -> None:
    """The LB reports 2 sessions, then 1, then 0: drained only then, without forcing MAINT."""
    counter = tmp_path / "host01.n"
    counter.write_text("3")
    n, admin = f"{tmp_path}/{{{{ host.name }}}}.n", f"{tmp_path}/{{{{ host.name }}}}.admin"
    spec = make_spec({"provider": "command", "drain_timeout": 10, "command": {
        "drain": f"echo drain > {admin}", "enable": f"echo up > {admin}",
        "state": (f"n=$(cat {n} 2>/dev/null || echo 0); [ $n -gt 0 ] && echo $((n-1)) > {n}; "
                  f"grep -qs drain {admin} && echo DRAIN $n || echo UP $n")}}, hosts=4)
    lb = load_balancer_for(spec)
    lb.poll_interval = 0.01
    out = pull_out(lb, spec, spec.hosts[0])
    assert out.data["verified"] is True and out.data["forced_maint"] is False
    assert (out.data["status"], out.data["sessions"]) == ("DRAIN", 0)
    assert counter.read_text().strip() == "0"


def test_server_name_renders_the_template(make_spec: MakeSpec) -> None:
    spec = make_spec({"provider": "haproxy", "haproxy": {
        "socket": "/x", "backend": "demo", "server": "{{ host.name }}-{{ vars.app_port }}"}})
    assert server_name(spec, spec.hosts[0]) == "host01-18080"
    assert server_name(make_spec({"provider": "none"}), spec.hosts[0]) == "host01"


def test_server_state_views() -> None:
    settling = ServerState("h", "UP 1/2", "ready", 0, "L4CON")
    assert settling.in_service and settling.settling and not settling.confirmed_up
    assert ServerState("h", "UP", "ready", 0, "L7OK").confirmed_up
    assert not ServerState("h", "DOWN", "drain", 0).in_service
    assert ServerState("h", "DOWN", "drain", 0).drained
    assert not ServerState("h", "DRAIN", "drain", 1).drained
