"""The trigger form: typed Params with titles, sections, enums and defaults from the app."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from tars_operators.config.spec import AppSpec

BATCHES_PATTERN = r"^\s*$|^\s*[0-9]{1,4}%?(\s*,\s*[0-9]{1,4}%?)*\s*$"


def js_pattern(pattern: str) -> str:
    """The app's version pattern for the form (JSON Schema regex; ``latest`` allowed)."""
    return pattern


def build_params(spec: AppSpec, *, canary: bool = False) -> dict[str, Param]:
    c = spec.config
    hosts = [h.name for h in spec.hosts]
    batches = ", ".join(str(b) for b in c.strategy.batches)
    version_kwargs: dict[str, Any] = {"default": "latest"} if canary else {}
    pattern = c.artifact.version_pattern
    if canary:
        pattern = f"^latest$|{pattern}"
    return {
        "version": Param(
            **version_kwargs, type="string", pattern=pattern, title="Version",
            description=f"The version to release; must match {c.artifact.version_pattern}"
            + (" or be 'latest'" if canary else ""),
            section="Release",
        ),
        "reason": Param(
            "", type="string", maxLength=500, title="Reason",
            description="Why this release (shown in the run note and audit trail)",
            section="Release",
        ),
        "ticket": Param(
            "", type="string", maxLength=100, pattern=r"^[A-Za-z0-9_.#/:-]*$", title="Ticket",
            description="Change ticket, e.g. OPS-1234", section="Release",
        ),
        "hosts": Param(
            [], type="array", items={"type": "string", "enum": hosts}, uniqueItems=True,
            title="Only these hosts", section="Scope",
            description="Narrow the release to these hosts (empty: all hosts of the app)",
            examples=hosts,
        ),
        "batches": Param(
            "", type="string", pattern=BATCHES_PATTERN, title="Batches override",
            description=f"Ramp like '1, 25%, 100%' (empty: the app's strategy: {batches})",
            section="Scope",
        ),
        "skip_fort": Param(
            False, type="boolean", title="Skip the fort (canary) stage", section="Safety overrides",
            description="Needs a reason below",
        ),
        "skip_fort_reason": Param(
            "", type="string", maxLength=500, title="Why skip the fort stage",
            section="Safety overrides",
        ),
        "force": Param(
            False, type="boolean", title="Force outside the deploy window / through a freeze",
            description="Needs a reason below; recorded in the run note and the audit log",
            section="Safety overrides",
        ),
        "force_reason": Param(
            "", type="string", maxLength=500, title="Why force", section="Safety overrides",
        ),
        "dry_run": Param(
            False, type="boolean", title="Dry run",
            description="Validate and show the plan; touch no host", section="Release",
        ),
    }
