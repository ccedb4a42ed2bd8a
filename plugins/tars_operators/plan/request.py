"""A release request → its plan or its refusal: the one rule ``prepare``, ``GET …/plan`` and
``tars plan`` share, so a preview accepts exactly what a run accepts.

Pure except for resolving ``latest`` (the artifact store's pointer), which is done last,
once every other check passed, through the ``latest`` callable the caller may replace.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tars_operators.config.spec import AppSpec
from tars_operators.errors import InvalidValue, PlanError
from tars_operators.plan.conf import LATEST, parse_batches
from tars_operators.plan.ramp import FORT, ReleasePlan, Stage, plan_release
from tars_operators.remote.validate import validate_version


@dataclass(frozen=True)
class ReleaseRequest:
    """What a person asks for: the trigger form's fields, the route's query, ``tars plan``'s options.

    ``version``: None is "not given" (a preview only: a run always has one); ``""`` and
    ``"latest"`` take the latest pointer. ``hosts``: names, or comma-separated text; empty is
    every host. ``batches``: ``"1, 25%, 100%"`` or a list; empty is ``strategy.batches``.
    """

    version: str | None = None
    hosts: str | Sequence[str] | None = None
    batches: str | Sequence[int | str] | None = None
    skip_fort: bool = False
    skip_fort_reason: str = ""
    force: bool = False
    force_reason: str = ""
    reason: str = ""
    ticket: str = ""
    dry_run: bool = False
    who: str = ""

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, who: str = "") -> ReleaseRequest:
        """A run's request from its params (a missing version means the latest pointer)."""
        version = params.get("version")
        return cls(
            version="" if version is None else version, hosts=params.get("hosts"),
            batches=params.get("batches"), skip_fort=bool(params.get("skip_fort")),
            skip_fort_reason=_text(params.get("skip_fort_reason")),
            force=bool(params.get("force")), force_reason=_text(params.get("force_reason")),
            reason=_text(params.get("reason")), ticket=_text(params.get("ticket")),
            dry_run=bool(params.get("dry_run")), who=who,
        )


def plan_request(spec: AppSpec, request: ReleaseRequest, *, slots: Sequence[str] | None = None,
                 canary: bool = False, latest: Callable[[], str] | None = None) -> ReleasePlan:
    """The plan of ``request``, or a ``TarsError`` (``PlanError`` mostly) naming the input and why.

    ``slots`` are the DAG's stage task groups (default: the deploy DAG's, the stages of the
    app's default plan); a plan whose stages do not fit them is refused. ``canary`` keeps
    the fort stage only.
    """
    given = request.version
    if given is not None and given not in LATEST:
        _check_version(given, spec.config.artifact.version_pattern)
    skip_reason, force_reason = request.skip_fort_reason.strip(), request.force_reason.strip()
    if request.skip_fort and not skip_reason:
        raise PlanError("params.skip_fort_reason: skipping the fort stage needs a reason")
    if request.force and not force_reason:
        raise PlanError("params.force_reason: forcing past a window or freeze needs a reason")
    plan = plan_release(spec, hosts=_hosts(request.hosts), batches=parse_batches(request.batches),
                        skip_fort=request.skip_fort)
    if canary:
        plan = _only(plan, [s.name for s in plan.stages if s.name == FORT][:1])
    slots = tuple(spec.default_plan.stage_names if slots is None else slots)
    if any(name not in slots for name in plan.stage_names):
        raise PlanError(
            f"params.batches: this plan needs the stages {', '.join(plan.stage_names)} but the "
            f"DAG has {len(slots)} ({', '.join(slots)}), from the app's strategy; use fewer, "
            "larger batches or change strategy.batches"
        )
    version = ("" if given is None else _latest(spec, latest) if given in LATEST else given)
    return replace(
        plan, slots=slots, version=version, who=request.who, reason=request.reason.strip(),
        ticket=request.ticket.strip(), forced=force_reason if request.force else "",
        skip_fort=skip_reason if request.skip_fort else "", dry_run=request.dry_run,
    )


def _check_version(version: object, pattern: str) -> None:
    """As given, never stripped: ``"2.0.0\\n"`` is refused, not trimmed into a release."""
    try:
        validate_version(version, pattern)
    except InvalidValue as exc:
        raise PlanError(f"params.version: {exc}") from None


def _latest(spec: AppSpec, latest: Callable[[], str] | None) -> str:
    if not spec.config.artifact.latest_url:
        raise PlanError("params.version: the latest version was asked for (no version, or "
                        "'latest') but artifact.latest_url is not configured; give a version")
    if latest is None:
        from tars_operators.hooks.artifacts import resolve_latest

        return resolve_latest(spec)
    return latest()


def _hosts(raw: str | Sequence[str] | None) -> list[str] | None:
    """Empty (None, ``""``, ``[]``) is every host; blank names left are refused by the ramp."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    names = raw.split(",") if isinstance(raw, str) else [str(name) for name in raw]
    return names or None


def _only(plan: ReleasePlan, names: list[str]) -> ReleasePlan:
    kept = [s for s in plan.stages if s.name in names]
    return replace(plan, stages=tuple(Stage(s.name, i, s.hosts) for i, s in enumerate(kept)),
                   budget_per_stage=tuple(plan.budget_per_stage[s.index] for s in kept))


def _text(value: Any) -> str:
    return str(value).strip() if value is not None else ""
