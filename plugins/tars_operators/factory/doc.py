"""The DAG's ``doc_md``: the app's default plan, budgets, windows and how to trigger it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tars_operators.config.spec import AppSpec


def plan_doc(spec: AppSpec, slots: list[str], *, canary: bool = False) -> str:
    c = spec.config
    plan = spec.default_plan
    rows = "\n".join(
        f"| {s.name} | {len(s.hosts)} | {plan.budget_for(s.name)} | "
        f"{', '.join(s.hosts[:8])}{' …' if len(s.hosts) > 8 else ''} |"
        for s in plan.stages if not canary or s.name in slots
    )
    windows = ", ".join(
        f"{'/'.join(w.days)} {w.start}–{w.end}" for w in c.schedule.windows
    ) or "always open"
    kind = "Scheduled canary (fort stage only)" if canary else "Release"
    return f"""### {kind} of `{spec.name}` — owner {c.app.owner}

{c.app.description}

| stage | host count | failure budget | host names |
|---|---|---|---|
{rows}

- Release failure budget: {plan.budget_total}; on failure: **{c.strategy.on_failure}**
- Traffic: {c.traffic.provider}, min in service {c.traffic.min_in_service}
- Deploy windows ({c.schedule.timezone}): {windows}; outside a window: {c.schedule.outside_window}
- Approval: {"after " + ", ".join(c.strategy.approval.after) if c.strategy.approval.enabled else "none"}
- Config: `{spec.source.name}` (sha256 `{config_digest(spec.source)}`)
"""


def config_digest(path: Path) -> str:
    """The first 12 hex digits of the config file's sha256: which version of the file the DAG
    was built from (a changed file shows here once the dag-processor has re-parsed it)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return "unreadable"
