"""Cross-field checks: what a single field's type cannot say (hosts, capacity, schedule, …).

Checks also run on a config with broken fields: those fields are absent, so a check that reads
one stops there, and a file with a broken ``strategy.batches`` still gets its schedule checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

from croniter import croniter

from tars_operators.config.problems import Problem, did_you_mean
from tars_operators.config.schema import AppConfig, Freeze
from tars_operators.config.spec import AppSpec, Host
from tars_operators.config.templatecheck import check_template_fields, check_template_files, check_template_secrets
from tars_operators.errors import PlanError

SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class CheckContext:
    """What the checks see: the config (possibly partial), its hosts and where it lives."""

    config: AppConfig
    valid: frozenset[str]  # top-level sections without any error
    hosts: tuple[Host, ...] | None  # None when hosts could not be resolved
    spec: AppSpec | None
    source: Path
    partial: bool = False  # the config has broken fields; reading one raises AttributeError


Check = Callable[[CheckContext], Iterable[Problem]]
_CHECKS: list[tuple[bool, Check]] = []


def check(*, hosts: bool = False) -> Callable[[Check], Check]:
    """Register a check (that needs the resolved hosts if ``hosts``)."""

    def register(fn: Check) -> Check:
        _CHECKS.append((hosts, fn))
        return fn

    return register


def run_checks(ctx: CheckContext) -> list[Problem]:
    """Every problem found by the checks that can run (a check of a broken field stops there)."""
    problems: list[Problem] = []
    for needs_hosts, fn in _CHECKS:
        if needs_hosts and ctx.hosts is None:
            continue
        if not ctx.partial:
            problems.extend(fn(ctx))
            continue
        try:
            for problem in fn(ctx):
                problems.append(problem)
        except AttributeError:  # a broken field, already reported by pydantic
            continue
    return problems


@check(hosts=True)
def _some_hosts(ctx: CheckContext) -> Iterable[Problem]:
    if not ctx.hosts:
        yield Problem(("hosts",), "expected at least one host (hosts.inventory or hosts.list),"
                      " got none", at_key=True)


@check(hosts=True)
def _fort(ctx: CheckContext) -> Iterable[Problem]:
    fort, names = ctx.config.strategy.fort, [h.name for h in ctx.hosts or ()]
    if isinstance(fort, int):
        if fort > len(names):
            yield Problem(("strategy", "fort"), f"expected at most {len(names)} (the number of"
                          f" hosts), got {fort}")
        return
    for index, name in enumerate(fort):
        if name not in names:
            yield Problem(("strategy", "fort", index), f"expected a host of this app, got"
                          f" '{name}' ({len(names)} hosts)", did_you_mean(name, names))
        elif fort.index(name) != index:
            yield Problem(("strategy", "fort", index), f"host '{name}' is listed twice")


@check()
def _batches(ctx: CheckContext) -> Iterable[Problem]:
    batches = ctx.config.strategy.batches
    if not batches:
        yield Problem(("strategy", "batches"), "expected at least one batch size, got []")
    for index, size in enumerate(batches):
        if size == 0:
            yield Problem(("strategy", "batches", index), "expected a batch size of at least 1,"
                          " got 0")


@check(hosts=True)
def _plan(ctx: CheckContext) -> Iterable[Problem]:
    if ctx.spec is None or not ctx.hosts or any(True for _ in (*_fort(ctx), *_batches(ctx))):
        return
    try:
        plan = ctx.spec.default_plan
    except PlanError as exc:
        path = ("strategy", "fort") if str(exc).startswith("fort:") else ("strategy", "batches")
        yield Problem(path, str(exc), "use smaller batches or a lower traffic.min_in_service")
        return
    approval = ctx.config.strategy.approval
    if approval.enabled:
        for index, name in enumerate(approval.after):
            if name not in plan.stage_names:
                yield Problem(("strategy", "approval", "after", index), "expected a stage of the"
                              f" plan ({', '.join(plan.stage_names)}), got '{name}'",
                              did_you_mean(name, plan.stage_names))


@check()
def _traffic(ctx: CheckContext) -> Iterable[Problem]:
    traffic = ctx.config.traffic
    provider = traffic.provider
    if provider != "none" and getattr(traffic, provider) is None:
        yield Problem(("traffic", provider), f"required when traffic.provider is '{provider}'",
                      f"add a '{provider}:' block under 'traffic' (see docs/config.md)",
                      at_key=True)
    if provider == "haproxy" and traffic.haproxy is not None:
        if not (traffic.haproxy.socket or traffic.haproxy.address):
            yield Problem(("traffic", "haproxy"), "expected 'socket' or 'address' (where the"
                          " HAProxy runtime API listens), got neither", at_key=True)


@check()
def _artifact(ctx: CheckContext) -> Iterable[Problem]:
    artifact = ctx.config.artifact
    if artifact.checksum.url is None and not artifact.checksum.sha256:
        yield Problem(("artifact", "checksum"), "expected 'url' or 'sha256', got neither",
                      at_key=True)
    url = artifact.url
    literal = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", url)
    if literal and "{" not in literal.group(0) and literal.group(1).lower() not in SCHEMES:
        yield Problem(("artifact", "url"), f"expected an http://, https:// or file:// URL, got"
                      f" scheme '{literal.group(1)}'")
    elif not literal and not url.lstrip().startswith("{"):
        yield Problem(("artifact", "url"), f"expected an http://, https:// or file:// URL, got"
                      f" '{url}'")


@check()
def _schedule(ctx: CheckContext) -> Iterable[Problem]:
    schedule = ctx.config.schedule
    if not _timezone_ok(schedule.timezone):
        yield Problem(("schedule", "timezone"), "expected an IANA timezone like 'Europe/Berlin',"
                      f" got '{schedule.timezone}'", _timezone_hint(schedule.timezone))
    for index, window in enumerate(schedule.windows):
        if window.start == window.end:
            yield Problem(("schedule", "windows", index, "end"), "expected an end different"
                          f" from start, got {window.end} for both (an end before the start"
                          " spans midnight)")
    for index, freeze in enumerate(schedule.freezes):
        yield from _freeze(index, freeze)
    canary = schedule.canary
    if canary is not None and not croniter.is_valid(canary.cron):
        yield Problem(("schedule", "canary", "cron"), "expected a cron expression like"
                      f" '0 6 * * mon-fri', got '{canary.cron}'")


def parse_when(text: str) -> date | datetime:
    """A freeze bound: an ISO date (``2024-12-24``) or datetime (``2024-12-24T18:00``)."""
    text = text.strip()
    return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)


def _freeze(index: int, freeze: Freeze) -> Iterable[Problem]:
    bounds = []
    for key in ("start", "end"):
        value = getattr(freeze, key)
        try:
            bounds.append(parse_when(value))
        except ValueError:
            yield Problem(("schedule", "freezes", index, key), "expected an ISO date or datetime"
                          f" like '2024-12-24' or '2024-12-24T18:00', got '{value}'")
    if len(bounds) == 2 and _as_datetime(bounds[1], end=True) < _as_datetime(bounds[0]):
        yield Problem(("schedule", "freezes", index, "end"), f"expected an end at or after"
                      f" start ({freeze.start}), got '{freeze.end}'")


def _as_datetime(value: date | datetime, end: bool = False) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return datetime.combine(value, datetime.max.time() if end else datetime.min.time())


@lru_cache(maxsize=256)
def _timezone_ok(name: str) -> bool:
    try:
        ZoneInfo(name)
        return True
    except (ValueError, KeyError, OSError):
        return False


def _timezone_hint(name: str) -> str | None:
    return did_you_mean(name, sorted(available_timezones()))


# Template checks look at each valid section themselves.
check()(check_template_fields)
check()(check_template_files)
check()(check_template_secrets)

# The analysis section's checks live beside its models; importing them registers them.
from tars_operators.config import analysis_checks  # noqa: E402,F401

# The runtime section's checks (host requirements, assembly) likewise.
from tars_operators.config import runtime_checks  # noqa: E402,F401
