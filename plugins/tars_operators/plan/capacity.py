"""The capacity floor (``traffic.min_in_service``): hosts of the app that must stay in service.

One rule, four callers: the plan (no stage may take more out than the floor allows), ``prepare``
(the same, against what the load balancer reports now), the traffic steps (each pull-out,
counting hosts already out) and the rollback DAG (how many hosts may be out together).
The floor is always of the whole fleet, never of a host selection.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from tars_operators.plan.sizes import Size


def required_in_service(min_in_service: Size, fleet: int) -> int:
    """Hosts that must stay in service: a count, or a percentage of ``fleet`` rounded up."""
    if isinstance(min_in_service, str):
        return math.ceil(int(min_in_service.rstrip("%")) * fleet / 100)
    return int(min_in_service)


def at_once(fleet: int, floor: int) -> int:
    """How many hosts may be out of rotation together (at least one, so a release can move)."""
    return max(1, fleet - floor)


def stage_violation(stages: Sequence[tuple[str, Sequence[str]]], fleet: int,
                    floor: int) -> str | None:
    """Why the first ``(name, hosts)`` stage that breaks the floor does, or None."""
    for name, hosts in stages:
        left = fleet - len(hosts)
        if left < floor:
            return (f"{name}: batch of {len(hosts)} would leave {left} of {fleet}"
                    f" hosts in service; traffic.min_in_service needs {floor}")
    return None


def live_violation(stages: Sequence[Sequence[str]], status: Mapping[str, str], up: Sequence[str],
                   floor: int) -> str | None:
    """The floor against the load balancer now: ``up`` in service, ``status`` of every host.

    A stage takes out only its hosts that are in service; hosts out already stay out.
    """
    fleet = len(status)
    biggest = max((len([h for h in hosts if h in up]) for hosts in stages), default=0)
    if len(up) - biggest >= floor:
        return None
    down = ", ".join(f"{name} ({state})" for name, state in status.items() if name not in up)
    return (f"capacity floor: {len(up)} of {fleet} hosts are in service now; a stage of "
            f"{biggest} would leave {len(up) - biggest}, and traffic.min_in_service needs "
            f"{floor}. Out of service now: {down or 'none'}")


def task_threads(parallel: int, tasks: int, hosts_in_task: int, fleet: int, floor: int,
                 *, pooled: bool = False) -> int:
    """Hosts one multi-host release task works on at once.

    Together the stage's tasks stay within ``strategy.parallel`` (its tasks run at most
    ``parallel`` at a time, so each gets its share) and within what the floor lets out at once.
    ``pooled`` (``traffic.pool``: a pool slot per task counts hosts out of rotation): one.
    """
    if pooled:
        return 1
    share = max(1, parallel // max(1, min(tasks, parallel)))
    return max(1, min(hosts_in_task, share, at_once(fleet, floor)))
