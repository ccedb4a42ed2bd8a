"""The trigger form: typed Params with titles, sections, enums and defaults from the app.

What JSON Schema can check is checked here, so the UI form and ``POST …/dagRuns`` (400)
refuse it before a run exists: the version pattern, host names (an enum of the inventory),
the shape of a batches override. What needs the plan (the capacity floor of a batches
override, a skipped fort without reason) is refused by ``prepare`` before any host, and
pre-checked by ``GET /tars/apps/{app}/plan`` (the ``tars`` client does).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from tars_operators.config.schema import DEFAULT_VERSION_PATTERN
from tars_operators.config.spec import AppSpec
from tars_operators.plan.conf import COUNT, PERCENT

RELEASE, SCOPE, SAFETY = "Release", "Scope", "Safety overrides"
# Airflow's form marks (and makes the Trigger button wait for) every field whose type does not
# allow null: only version and reason are required; the rest are typed to allow null.
OPTIONAL_BOOL, OPTIONAL_TEXT = ["boolean", "null"], ["string", "null"]


def whole(pattern: str) -> str:
    """``pattern`` as a JSON Schema regex that must match the whole string.

    JSON Schema ``pattern`` searches (``re.search`` on the server, ``RegExp.test`` in the
    form). ``^…$`` is not enough in Python: ``$`` also matches before a trailing newline, so
    ``"2.0.0\\n"`` would pass; ``(?!\\n)`` closes that and means nothing to JavaScript's ``$``.
    """
    return rf"^(?:{pattern})$(?!\n)"


_SIZE = f"(?:{PERCENT}|{COUNT})"
# Empty (the app's ramp) or sizes separated by commas: what ``prepare``'s parse_batches takes.
BATCHES_PATTERN = whole(rf"\s*|\s*{_SIZE}(?:\s*,\s*{_SIZE})*\s*")
TICKET_PATTERN = whole(r"[A-Za-z0-9_.#/:-]*")


def js_pattern(pattern: str, *, latest: bool = False) -> str:
    """The app's version pattern as a whole-string JSON Schema regex (``latest`` optional).

    The app's pattern must match the whole version, as ``validate_version`` checks it.
    """
    return whole(f"latest|{pattern}" if latest else pattern)


def batches_text(spec: AppSpec) -> str:
    """The app's ramp as the form shows it: ``1, 25%, 100%``."""
    return ", ".join(str(b) for b in spec.config.strategy.batches)


def known_versions(spec: AppSpec) -> list[str]:
    """Versions the config pins (``artifact.checksum.sha256``), newest first, then ``latest``.

    The form cannot ask the artifact store while the DAG is parsed; ``tars plan`` and the
    plan route resolve ``latest`` live.
    """
    pinned = sorted(spec.config.artifact.checksum.sha256, key=_version_key, reverse=True)
    return pinned[:20] + (["latest"] if spec.config.artifact.latest_url else [])


def version_help(spec: AppSpec) -> str:
    """The version field's help in words; the pattern only when the app set its own."""
    a = spec.config.artifact
    text = f"The version of {spec.name} to release, e.g. " + (
        ", ".join(known_versions(spec)[:3]) or "1.4.2")
    if a.latest_url:
        text += " — 'latest' takes the artifact store's latest pointer"
    if a.version_pattern != DEFAULT_VERSION_PATTERN:
        text += f" (this app's versions match {a.version_pattern})"
    return text


def _version_key(version: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in version.replace("-", ".").split(".")]


def build_params(spec: AppSpec, *, canary: bool = False) -> dict[str, Param]:
    """The form of ``tars_deploy__<app>`` (or the canary's: every param has a default)."""
    params = _release_params(spec, canary=canary)
    if not canary:
        params.update(_scope_params(spec))
    params.update(_safety_params())
    return params


def _release_params(spec: AppSpec, *, canary: bool) -> dict[str, Param]:
    c = spec.config
    latest = bool(c.artifact.latest_url)
    version_default: dict[str, Any] = {"default": "latest"} if canary else {}
    return {
        "version": Param(
            **version_default, type="string", pattern=js_pattern(c.artifact.version_pattern, latest=latest),
            minLength=1, maxLength=64, title="Version",
            description=version_help(spec), examples=known_versions(spec), section=RELEASE,
        ),
        "reason": Param(
            "scheduled canary" if canary else "", type="string", maxLength=500, title="Reason",
            description="Why this release (shown in the run note and the audit trail)",
            section=RELEASE,
        ),
        "ticket": Param(
            "", type=OPTIONAL_TEXT, maxLength=100, pattern=TICKET_PATTERN, title="Ticket",
            description="Change ticket, e.g. OPS-1234", section=RELEASE,
        ),
        "dry_run": Param(
            False, type=OPTIONAL_BOOL, title="Dry run",
            description="Validate and show the plan; touch no host", section=RELEASE,
        ),
    }


def _readiness_note(spec: AppSpec) -> str:
    """This form is built at parse time (no host is asked): say where readiness is known."""
    from tars_operators.assembly.requirements import runtime_for

    policies = {runtime_for(spec, h).policy for h in spec.hosts if runtime_for(spec, h).requires}
    if not policies:
        return ""
    unready = {"refuse": "refuses the run", "skip_unready": "is left out of it"}
    what = (unready.get(policies.pop(), "follows runtime.policy") if len(policies) == 1
            else "refuses the run or is left out, per its group's runtime.policy")
    return (". Host readiness (runtime.requires) is not known to this form: prepare checks "
            f"every chosen host before any host leaves rotation (an unready host {what}); the "
            "App tab shows each host's readiness as of the last release or refresh")


def _scope_params(spec: AppSpec) -> dict[str, Param]:
    hosts = [h.name for h in spec.hosts]
    return {
        "hosts": Param(
            [], type=["array", "null"], items={"type": "string", "enum": hosts}, uniqueItems=True,
            title="Only these hosts", section=SCOPE,
            description=f"Narrow the release to some of the app's {len(hosts)} hosts "
                        "(empty: all of them)" + _readiness_note(spec),
            examples=hosts,
        ),
        "batches": Param(
            batches_text(spec), type=OPTIONAL_TEXT, pattern=BATCHES_PATTERN, title="Batches",
            description="The ramp after the fort stage: host counts or percentages, the last "
                        "one repeating (default: the app's strategy.batches). A ramp that would "
                        "take too many hosts out of service at once is refused before any host",
            section=SCOPE,
        ),
        "skip_fort": Param(
            False, type=OPTIONAL_BOOL, title="Skip the fort (canary) stage", section=SAFETY,
            description="Needs a reason below",
        ),
        "skip_fort_reason": Param(
            "", type=OPTIONAL_TEXT, maxLength=500, title="Why skip the fort stage", section=SAFETY,
        ),
    }


def _safety_params() -> dict[str, Param]:
    return {
        "force": Param(
            False, type=OPTIONAL_BOOL, title="Force outside the deploy window / through a freeze",
            description="Needs a reason below; recorded in the run note and the audit log",
            section=SAFETY,
        ),
        "force_reason": Param(
            "", type=OPTIONAL_TEXT, maxLength=500, title="Why force", section=SAFETY,
        ),
    }
