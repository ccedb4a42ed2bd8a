"""The capacity floor: one rule for the plan, prepare's live check, pull-out and the rollback DAG."""

from __future__ import annotations

import pytest

from tars_operators.plan.capacity import at_once, live_violation, required_in_service
from tars_operators.steps import traffic
from tests.unit.plan.test_ramp import make_spec

pytestmark = pytest.mark.unit

HOSTS = [f"h{i:02d}" for i in range(1, 11)]


@pytest.mark.parametrize(("setting", "fleet", "floor", "out_together"), [
    ("50%", 10, 5, 5), ("50%", 5, 3, 2), ("34%", 3, 2, 1), ("75%", 4, 3, 1), (0, 4, 0, 4),
    (2, 3, 2, 1),
])
def test_the_plan_the_traffic_steps_and_the_rollback_dag_use_one_floor(
        setting: int | str, fleet: int, floor: int, out_together: int) -> None:
    plan = make_spec(fleet, min_in_service=setting, strategy={"fort": 0, "batches": [1]}).default_plan
    assert plan.min_in_service == floor == required_in_service(setting, fleet)
    assert traffic.required_in_service is required_in_service  # the pull-out check's rule
    assert at_once(fleet, floor) == out_together


def test_prepare_counts_hosts_already_out_and_names_them() -> None:
    status = {h: "UP" for h in HOSTS} | {"h09": "DOWN", "h10": "MAINT"}
    up = HOSTS[:8]
    # a stage of four in-service hosts leaves 4 of the 8 in service: below a floor of 5
    assert live_violation([HOSTS[:1], HOSTS[1:5]], status, up, 5) == (
        "capacity floor: 8 of 10 hosts are in service now; a stage of 4 would leave 4, and "
        "traffic.min_in_service needs 5. Out of service now: h09 (DOWN), h10 (MAINT)")
    # hosts already out are not taken out again: a stage of h07..h10 takes out two
    assert live_violation([HOSTS[6:]], status, up, 5) is None
