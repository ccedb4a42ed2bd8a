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
from tars_operators.plan.capacity import required_in_service, stage_violation
from tars_operators.plan.sizes import Size, batch_size, budget_count, parse_size

FORT = "fort"


@dataclass(frozen=True)
class Stage:
    """One step of the ramp: its hosts are released together."""

    name: str  # "fort", "batch_1", "batch_2", …
    index: int  # position in ReleasePlan.stages
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class ReleasePlan:
    """The one plan of a release: what ``tars plan``, the plan route and ``prepare`` show.

    ``stages`` holds the stages that have hosts; ``slots`` the DAG's stage task groups (a
    plan may use fewer). The run's fields (version, who, reason, …) are set by
    ``plan.request.plan_request``. JSON-able through :meth:`to_dict` (``prepare``'s XCom
    ``plan`` and the preview's ``plan``).
    """

    app: str
    stages: tuple[Stage, ...]
    budget_per_stage: tuple[int, ...]  # failed hosts tolerated in each stage, by stage index
    budget_total: int  # failed hosts tolerated in the whole release
    min_in_service: int  # hosts of the app that must stay in service at any time
    fleet_size: int  # hosts of the app (the plan may cover fewer)
    slots: tuple[str, ...] = ()  # the DAG's stage slots; empty: the plan's own stages
    version: str = ""  # empty: not given (a preview); a run always has one
    who: str = ""
    reason: str = ""
    ticket: str = ""
    forced: str = ""  # reason of a forced window/freeze override
    skip_fort: str = ""  # reason, when the fort stage was skipped
    in_rotation: tuple[str, ...] = ()  # hosts the LB had in rotation before the release
    dry_run: bool = False

    @property
    def all_hosts(self) -> tuple[str, ...]:
        """Every host of the plan, in stage order."""
        return tuple(host for stage in self.stages for host in stage.hosts)

    @property
    def stage_names(self) -> tuple[str, ...]:
        """The stages that have hosts, in order."""
        return tuple(stage.name for stage in self.stages)

    @property
    def slot_names(self) -> tuple[str, ...]:
        """The DAG's stage slots in order (the plan's stages when it was made without a DAG)."""
        return self.slots or self.stage_names

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def hosts(self, name: str) -> tuple[str, ...]:
        """The hosts of stage (or slot) ``name``; none for a slot this plan does not use."""
        return next((s.hosts for s in self.stages if s.name == name), ())

    def budget_for(self, name: str) -> int:
        """Failed hosts tolerated in stage ``name`` (0 for a slot this plan does not use)."""
        return next((self.budget_per_stage[s.index] for s in self.stages if s.name == name), 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "version": self.version,
            "stages": [
                {"name": s.name, "index": s.index, "hosts": list(s.hosts)} for s in self.stages
            ],
            "slots": list(self.slots),
            "budget_per_stage": list(self.budget_per_stage),
            "budget_stage": {s.name: self.budget_per_stage[s.index] for s in self.stages},
            "budget_total": self.budget_total,
            "min_in_service": self.min_in_service,
            "fleet_size": self.fleet_size,
            "who": self.who, "reason": self.reason, "ticket": self.ticket,
            "forced": self.forced, "skip_fort": self.skip_fort,
            "in_rotation": list(self.in_rotation), "dry_run": self.dry_run,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReleasePlan:
        """Also reads the older XCom shape (stages as ``[slot, hosts]`` pairs, empty slots too)."""
        pairs = [(str(s["name"]), s["hosts"]) if isinstance(s, dict) else (str(s[0]), s[1])
                 for s in data["stages"]]
        used = [(name, tuple(str(h) for h in hosts)) for name, hosts in pairs if hosts]
        stages = tuple(Stage(name, i, hosts) for i, (name, hosts) in enumerate(used))
        by_name = data.get("budget_stage") or {}
        budgets = data.get("budget_per_stage") or [by_name.get(s.name, 0) for s in stages]
        return cls(
            app=str(data.get("app", "")),
            stages=stages,
            budget_per_stage=tuple(int(b) for b in budgets),
            budget_total=int(data["budget_total"]),
            min_in_service=int(data.get("min_in_service", 0)),
            fleet_size=int(data.get("fleet_size", 0)),
            slots=tuple(str(s) for s in data["slots"]) if "slots" in data
            else tuple(name for name, _ in pairs),
            version=str(data.get("version") or ""),
            who=str(data.get("who") or ""), reason=str(data.get("reason") or ""),
            ticket=str(data.get("ticket") or ""), forced=str(data.get("forced") or ""),
            skip_fort=str(data.get("skip_fort") or ""),
            in_rotation=tuple(str(h) for h in data.get("in_rotation") or ()),
            dry_run=bool(data.get("dry_run")),
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
    floor = required_in_service(traffic.min_in_service, fleet)
    violation = stage_violation([(s.name, s.hosts) for s in stages], fleet, floor)
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
