"""What ``tars plan`` shows: the stages and hosts, budgets, capacity floor and windows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tars_operators.config.problems import display_path
from tars_operators.config.spec import AppSpec
from tars_operators.plan.ramp import ReleasePlan
from tars_operators.plan.windows import WindowStatus, describe_window


def preview(spec: AppSpec, plan: ReleasePlan, status: WindowStatus, *,
            now: datetime) -> dict[str, Any]:
    """The plan as JSON-able data (``tars plan --json``, ``GET /tars/apps/{app}/plan``)."""
    cfg = spec.config
    schedule = cfg.schedule
    return {
        "app": spec.name,
        "version": plan.version or None,
        "source": display_path(spec.source, None),
        "plan": plan.to_dict(),
        "min_in_service_setting": cfg.traffic.min_in_service,
        "failure_budget_setting": {"per_stage": cfg.strategy.failure_budget.per_stage,
                                   "total": cfg.strategy.failure_budget.total},
        "on_failure": cfg.strategy.on_failure,
        "approval_after": list(cfg.strategy.approval.after) if cfg.strategy.approval.enabled
        else [],
        "analysis": analysis_preview(spec, plan),
        "schedule": {
            "timezone": schedule.timezone,
            "windows": [describe_window(w) for w in schedule.windows],
            "freezes": [f.model_dump() for f in schedule.freezes],
            "outside_window": schedule.outside_window,
            "checked_at": now.isoformat(),
            "open": status.open,
            "frozen_by": status.frozen_by.model_dump() if status.frozen_by else None,
            "next_open": status.next_open.isoformat() if status.next_open else None,
            "reason": status.reason,
        },
    }


def render_table(data: dict[str, Any]) -> str:
    """The plan as the text table a person reads."""
    plan = data["plan"]
    version = data["version"] or "(not given)"
    lines = [
        f"app {data['app']}  version {version}  ({plan['fleet_size']} hosts, {data['source']})",
        "",
        f"{'stage':<10} {'hosts':>5} {'budget':>6}  names",
    ]
    for stage, budget in zip(plan["stages"], plan["budget_per_stage"]):
        names = ", ".join(stage["hosts"])
        lines.append(f"{stage['name']:<10} {len(stage['hosts']):>5} {budget:>6}  {names}")
    setting = data["failure_budget_setting"]
    lines += [
        "",
        f"failure budget: {plan['budget_total']} host(s) in the release (total: {setting['total']},"
        f" per stage: {setting['per_stage']}); on failure: {data['on_failure']}",
        f"min in service: {plan['min_in_service']} of {plan['fleet_size']} hosts"
        f" (traffic.min_in_service: {data['min_in_service_setting']})",
    ]
    if data["approval_after"]:
        lines.append(f"approval after: {', '.join(data['approval_after'])}")
    lines += _analysis_lines(data.get("analysis"))
    lines += _schedule_lines(data["schedule"])
    return "\n".join(lines)


def analysis_preview(spec: AppSpec, plan: ReleasePlan) -> dict[str, Any] | None:
    """The canary analysis the release will run (None: off)."""
    a = spec.config.analysis
    stages = [s for s in plan.stage_names if a.judges(s)]
    if not a.enabled or not stages:
        return None
    metrics = []
    for m in a.metrics:
        rules = ([f"above {m.max_absolute:g}"] if m.max_absolute is not None else []) + (
            [f"above baseline × {m.max_ratio_vs_baseline:g}"
             + (f" + {m.tolerance:g}" if m.tolerance else "")]
            if m.max_ratio_vs_baseline is not None else [])
        source = f"lb {m.lb}" if m.lb else f"query {m.query}"
        metrics.append({"name": m.name, "source": source, "fails": " or ".join(rules),
                        "min_requests": m.min_requests if m.min_requests is not None
                        else a.min_requests if m.lb else None})
    return {"stages": stages, "window_seconds": a.window(spec.config.strategy.bake_seconds),
            "window_from": "analysis.window_seconds" if a.window_seconds is not None
            else "strategy.bake_seconds", "inconclusive": a.inconclusive, "metrics": metrics}


def _analysis_lines(analysis: dict[str, Any] | None) -> list[str]:
    if not analysis:
        return []
    lines = [f"analysis at {', '.join(analysis['stages'])}: {analysis['window_seconds']:g}s window "
             f"({analysis['window_from']}) against hosts still on the previous version; "
             f"inconclusive → {analysis['inconclusive']}"]
    for m in analysis["metrics"]:
        need = f"; at least {m['min_requests']} requests" if m["min_requests"] is not None else ""
        lines.append(f"  {m['name']}: {m['source']}; fails {m['fails']}{need}")
    return lines


def _schedule_lines(schedule: dict[str, Any]) -> list[str]:
    windows = "; ".join(schedule["windows"]) or "none (always open)"
    state = "OPEN now" if schedule["open"] else "CLOSED now"
    lines = [f"windows ({schedule['timezone']}): {windows}",
             f"  {state}: {schedule['reason']}"]
    for freeze in schedule["freezes"]:
        reason = f" ({freeze['reason']})" if freeze["reason"] else ""
        lines.append(f"  freeze {freeze['start']} to {freeze['end']}{reason}")
    if not schedule["open"]:
        lines.append(f"  outside a window: {schedule['outside_window']}")
    return lines
