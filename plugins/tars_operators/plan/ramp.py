"""The release ramp: which hosts go in which stage (fort, batch_1, …) and the failure budgets.

Ansible ``serial`` semantics: a percentage is of the number of hosts in the plan, rounded down
but at least 1, and the last size repeats until every host has a stage. Fort hosts go first,
in a stage of their own, and are not part of any batch. No stage may take so many hosts out
that fewer than ``traffic.min_in_service`` of the app's hosts stay in service.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tars_operators.config.problems import did_you_mean
from tars_operators.config.spec import AppSpec
from tars_operators.errors import PlanError
from tars_operators.plan.sizes import Size, batch_size, budget_count, floor_count, parse_size

FORT = "fort"


@dataclass(frozen=True)
class Stage:
    """One step of the ramp: its hosts are released together."""

    name: str  # "fort", "batch_1", "batch_2", …
    index: int  # position in ReleasePlan.stages
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class ReleasePlan:
    """The concrete plan of one release; JSON-able through :meth:`to_dict` (goes via XCom)."""

    app: str
    stages: tuple[Stage, ...]
    budget_per_stage: tuple[int, ...]  # failed hosts tolerated in each stage, by stage index
    budget_total: int  # failed hosts tolerated in the whole release
    min_in_service: int  # hosts of the app that must stay in service at any time
    fleet_size: int  # hosts of the app (the plan may cover fewer)

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host of the plan, in stage order."""
        return tuple(host for stage in self.stages for host in stage.hosts)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def budget_for(self, name: str) -> int:
        """Failed hosts tolerated in stage ``name``."""
        return self.budget_per_stage[self.stage(name).index]

    def to_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "stages": [
                {"name": s.name, "index": s.index, "hosts": list(s.hosts)} for s in self.stages
            ],
            "budget_per_stage": list(self.budget_per_stage),
            "budget_total": self.budget_total,
            "min_in_service": self.min_in_service,
            "fleet_size": self.fleet_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReleasePlan:
        stages = tuple(
            Stage(str(s["name"]), int(s["index"]), tuple(str(h) for h in s["hosts"]))
            for s in data["stages"]
        )
        return cls(
            app=str(data["app"]),
            stages=stages,
            budget_per_stage=tuple(int(b) for b in data["budget_per_stage"]),
            budget_total=int(data["budget_total"]),
            min_in_service=int(data["min_in_service"]),
            fleet_size=int(data["fleet_size"]),
        )


def plan_release(
    spec: AppSpec,
    *,
    hosts: list[str] | None = None,
    batches: list[int | str] | None = None,
    skip_fort: bool = False,
) -> ReleasePlan:
    """The stages, budgets and capacity floor of a release of ``spec``.

    ``hosts`` limits the release to some hosts (kept in inventory order), ``batches``
    overrides ``strategy.batches`` (e.g. ``[1, "25%", "100%"]``), ``skip_fort`` drops the fort.
    Raises ``PlanError`` for unknown hosts, an empty plan or a broken capacity floor.
    """
    strategy, traffic = spec.config.strategy, spec.config.traffic
    names = _select(spec, hosts)
    sizes: Sequence[Size] = (
        strategy.batches if batches is None else [parse_size(b) for b in batches]
    )
    if not sizes:
        raise PlanError("batches is empty: give at least one batch size")
    fort = () if skip_fort else _fort(strategy.fort, names)
    rest = [name for name in names if name not in fort]
    stages = [Stage(FORT, 0, fort)] if fort else []
    for chunk in _chunks(rest, [batch_size(size, len(names)) for size in sizes]):
        stages.append(Stage(f"batch_{len(stages) + (0 if fort else 1)}", len(stages), chunk))
    fleet = len(spec.hosts)
    floor = floor_count(traffic.min_in_service, fleet)
    violation = capacity_violation(stages, fleet, floor)
    if violation:
        raise PlanError(violation)
    budget = strategy.failure_budget
    return ReleasePlan(
        app=spec.name,
        stages=tuple(stages),
        budget_per_stage=tuple(budget_count(budget.per_stage, len(s.hosts)) for s in stages),
        budget_total=budget_count(budget.total, len(names)),
        min_in_service=floor,
        fleet_size=fleet,
    )


def stage_slots(spec: AppSpec) -> int:
    """How many stages the default plan of ``spec`` has (the DAG's stage task groups)."""
    return len(plan_release(spec).stages)


def capacity_violation(stages: Sequence[Stage], fleet: int, floor: int) -> str | None:
    """Why the first stage that breaks the floor does, or ``None`` when every stage keeps it."""
    for stage in stages:
        left = fleet - len(stage.hosts)
        if left < floor:
            return (f"{stage.name}: batch of {len(stage.hosts)} would leave {left} of {fleet}"
                    f" hosts in service; traffic.min_in_service needs {floor}")
    return None


def _select(spec: AppSpec, hosts: list[str] | None) -> list[str]:
    known = [host.name for host in spec.hosts]
    if not known:
        raise PlanError(f"app '{spec.name}' has no hosts")
    if hosts is None:
        return known
    wanted = [name.strip() for name in hosts if name.strip()]
    if not wanted:
        raise PlanError("the host list is empty: name at least one host")
    unknown = [name for name in wanted if name not in known]
    if unknown:
        hint = did_you_mean(unknown[0], known)
        raise PlanError(f"unknown host(s) {', '.join(unknown)} for app '{spec.name}'"
                        f" ({len(known)} hosts: {_span(known)})" + (f"; {hint}" if hint else ""))
    chosen = set(wanted)
    return [name for name in known if name in chosen]


def _fort(fort: int | tuple[str, ...], names: list[str]) -> tuple[str, ...]:
    if isinstance(fort, int):
        return tuple(names[: max(fort, 0)])
    # Named fort hosts outside a host selection are not released: the fort shrinks with it.
    return tuple(name for name in names if name in set(fort))


def _chunks(hosts: list[str], sizes: list[int]) -> list[tuple[str, ...]]:
    chunks, start, index = [], 0, 0
    while start < len(hosts):
        size = sizes[min(index, len(sizes) - 1)]
        chunks.append(tuple(hosts[start : start + size]))
        start, index = start + size, index + 1
    return chunks


def _span(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 6 else f"{names[0]} … {names[-1]}"
