"""The ramp: Ansible serial semantics, fort, overrides, capacity floor, budgets, round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tars_operators.config.schema import AppConfig
from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import PlanError
from tars_operators.plan.ramp import ReleasePlan, plan_release, stage_slots

pytestmark = pytest.mark.unit


def make_spec(hosts: int, *, strategy: dict[str, Any] | None = None,
              min_in_service: int | str = 0) -> AppSpec:
    config = AppConfig.model_validate({
        "app": {"name": "shop", "owner": "team"},
        "artifact": {"url": "http://127.0.0.1/x-{{ version }}.tgz", "checksum": {"url": "{{ url }}.sha"}},
        "hosts": {},
        "service": {"start": "start", "stop": "stop"},
        "traffic": {"min_in_service": min_in_service},
        "strategy": strategy or {},
    })
    fleet = tuple(Host(f"h{i:02d}", f"127.0.0.{i}") for i in range(1, hosts + 1))
    return AppSpec(config, fleet, Path("/configs/apps/shop.yaml"))


def sizes(plan: ReleasePlan) -> list[tuple[str, int]]:
    return [(s.name, len(s.hosts)) for s in plan.stages]


@pytest.mark.parametrize(("hosts", "strategy", "expected"), [
    # Default: fort 1, batches [1, "25%", "100%"]; 25% of 10 is 2; "100%" takes the rest.
    (10, {}, [("fort", 1), ("batch_1", 1), ("batch_2", 2), ("batch_3", 6)]),
    (4, {}, [("fort", 1), ("batch_1", 1), ("batch_2", 1), ("batch_3", 1)]),
    (1, {}, [("fort", 1)]),
    (2, {}, [("fort", 1), ("batch_1", 1)]),
    # The last size repeats until hosts run out.
    (7, {"fort": 0, "batches": [2]}, [("batch_1", 2), ("batch_2", 2), ("batch_3", 2), ("batch_4", 1)]),
    # Percentages are of all hosts in the plan (fort included), rounded down, at least 1.
    (10, {"fort": 2, "batches": ["30%"]}, [("fort", 2), ("batch_1", 3), ("batch_2", 3), ("batch_3", 2)]),
    (3, {"fort": 0, "batches": ["10%"]}, [("batch_1", 1), ("batch_2", 1), ("batch_3", 1)]),
    (20, {"fort": 1, "batches": [1, "50%"]}, [("fort", 1), ("batch_1", 1), ("batch_2", 10), ("batch_3", 8)]),
])
def test_stages_follow_ansible_serial(hosts: int, strategy: dict[str, Any], expected: list[tuple[str, int]]) -> None:
    plan = plan_release(make_spec(hosts, strategy=strategy))
    assert sizes(plan) == expected
    assert list(plan.all_hosts) == [f"h{i:02d}" for i in range(1, hosts + 1)]
    assert [s.index for s in plan.stages] == list(range(len(expected)))


def test_named_fort_hosts_go_first_and_leave_the_batches() -> None:
    plan = plan_release(make_spec(5, strategy={"fort": ["h04", "h02"], "batches": [2]}))
    assert [(s.name, s.hosts) for s in plan.stages] == [
        ("fort", ("h02", "h04")), ("batch_1", ("h01", "h03")), ("batch_2", ("h05",))]


def test_overrides_hosts_batches_and_skip_fort() -> None:
    spec = make_spec(10)
    plan = plan_release(spec, hosts=["h09", "h01", "h05", "h03"], batches=["50%"], skip_fort=True)
    assert [(s.name, s.hosts) for s in plan.stages] == [
        ("batch_1", ("h01", "h03")), ("batch_2", ("h05", "h09"))]
    assert plan.fleet_size == 10
    assert sizes(plan_release(spec, batches=[3, "1"])) == [
        ("fort", 1), ("batch_1", 3), ("batch_2", 1), ("batch_3", 1), ("batch_4", 1), ("batch_5", 1),
        ("batch_6", 1), ("batch_7", 1)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"hosts": ["h01", "h99", "hx"]}, "unknown host(s) h99, hx for app 'shop' (10 hosts: h01 … h10); did you mean 'h09'?"),
    ({"hosts": [" ", ""]}, "the host list is empty: name at least one host"),
    ({"batches": ["ten"]}, "expected a host count or a percentage like '25%', got 'ten'"),
    ({"batches": [0]}, "a batch must hold at least 1 host, got 0"),
    ({"batches": []}, "batches is empty: give at least one batch size"),
    ({"batches": [8], "skip_fort": True},
     "batch_1: batch of 8 would leave 2 of 10 hosts in service; traffic.min_in_service needs 5"),
])
def test_plan_errors_say_what_is_wrong(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError) as caught:
        plan_release(make_spec(10, min_in_service="50%"), **kwargs)
    assert str(caught.value) == message


def test_no_hosts_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match="app 'shop' has no hosts"):
        plan_release(make_spec(0))


@pytest.mark.parametrize(("setting", "hosts", "floor"), [
    ("50%", 10, 5), ("50%", 5, 3), ("25%", 10, 3), ("0%", 10, 0), (2, 10, 2), ("100%", 1, 1),
])
def test_min_in_service_rounds_up(setting: int | str, hosts: int, floor: int) -> None:
    spec = make_spec(hosts, strategy={"fort": 0, "batches": [1]}, min_in_service=setting)
    if hosts - 1 < floor:
        with pytest.raises(PlanError):
            plan_release(spec)
    else:
        assert plan_release(spec).min_in_service == floor


def test_capacity_floor_counts_the_whole_fleet_not_the_selection() -> None:
    spec = make_spec(10, strategy={"fort": 0, "batches": ["100%"]}, min_in_service="50%")
    # Three hosts selected, all in one batch: 7 of 10 stay in service.
    assert sizes(plan_release(spec, hosts=["h01", "h02", "h03"])) == [("batch_1", 3)]


def test_budgets_resolve_to_host_counts() -> None:
    spec = make_spec(10, strategy={"failure_budget": {"per_stage": "50%", "total": "25%"}})
    plan = plan_release(spec)
    assert sizes(plan) == [("fort", 1), ("batch_1", 1), ("batch_2", 2), ("batch_3", 6)]
    assert plan.budget_per_stage == (0, 0, 1, 3) and plan.budget_total == 2
    assert plan.budget_for("batch_3") == 3
    counted = plan_release(make_spec(4, strategy={"failure_budget": {"per_stage": 1, "total": 2}}))
    assert counted.budget_per_stage == (1, 1, 1, 1) and counted.budget_total == 2


def test_plan_round_trips_through_json() -> None:
    plan = plan_release(make_spec(10))
    again = ReleasePlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    assert again.stage("batch_2").hosts == ("h03", "h04")


def test_a_plan_prepare_pushed_before_the_one_plan_type_still_reads() -> None:
    """A run planned by an older Tars (stages as [slot, hosts] pairs) resumes and shows."""
    old = {"version": "2.0.0", "stages": [["fort", ["h01"]], ["batch_1", ["h02", "h03"]],
                                          ["batch_2", []]],
           "budget_stage": {"fort": 0, "batch_1": 1}, "budget_total": 1, "who": "ann",
           "reason": "r", "ticket": "T-1", "forced": "", "skip_fort": "",
           "in_rotation": ["h01", "h02", "h03"], "dry_run": False}
    plan = ReleasePlan.from_dict(old)
    assert plan.slot_names == ("fort", "batch_1", "batch_2")
    assert plan.stage_names == ("fort", "batch_1")
    assert (plan.hosts("batch_1"), plan.hosts("batch_2")) == (("h02", "h03"), ())
    assert (plan.budget_for("batch_1"), plan.budget_for("batch_2")) == (1, 0)
    assert (plan.version, plan.who, plan.in_rotation) == ("2.0.0", "ann", ("h01", "h02", "h03"))


def test_stage_slots_is_the_default_plans_stage_count() -> None:
    assert stage_slots(make_spec(10)) == 4
    assert stage_slots(make_spec(7, strategy={"fort": 0, "batches": [2]})) == 4
