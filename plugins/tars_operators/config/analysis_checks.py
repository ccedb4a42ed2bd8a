"""Lint of the ``analysis`` section: what its field types cannot say (registered by checks.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from jinja2 import TemplateSyntaxError

from tars_operators.config.checks import CheckContext, check
from tars_operators.config.problems import Problem, did_you_mean
from tars_operators.config.templating import check_syntax
from tars_operators.errors import PlanError


@check()
def _analysis(ctx: CheckContext) -> Iterable[Problem]:
    a = ctx.config.analysis
    if not a.enabled:
        return
    if not a.metrics:
        yield Problem(("analysis", "metrics"), "expected at least one metric when analysis is "
                      "enabled, got none", at_key=True)
    if a.window_seconds is None and ctx.config.strategy.bake_seconds <= 0:
        yield Problem(("analysis",), "expected an observation window: set "
                      "analysis.window_seconds, or strategy.bake_seconds (the bake is then the "
                      "window)", at_key=True)
    if (a.inconclusive == "approval" and a.window_seconds is not None
            and ctx.config.strategy.bake_seconds > 0):
        # The approval would sit after the bake, where the gate cannot go past it on a pass.
        yield Problem(("analysis", "inconclusive"), "'approval' with both a window of its own "
                      "(analysis.window_seconds) and a bake (strategy.bake_seconds) is not "
                      "supported", "leave analysis.window_seconds unset (the bake is then the "
                      "window), or choose 'continue' or 'rollback'")
    yield from _sources(ctx)


def _sources(ctx: CheckContext) -> Iterable[Problem]:
    from tars_operators.hooks.lb.provider import PROVIDERS  # config must not import hooks at load

    a, provider = ctx.config.analysis, ctx.config.traffic.provider
    counters = PROVIDERS[provider].offers_counters
    for index, metric in enumerate(a.metrics):
        path = ("analysis", "metrics", index)
        if metric.lb is not None and not counters:
            yield Problem((*path, "lb"), f"traffic.provider '{provider}' does not report "
                          f"per-server counters, so 'lb' metrics cannot be read",
                          "use a 'query' metric (analysis.prometheus) or traffic.provider "
                          "haproxy")
        if metric.query is not None:
            if a.prometheus is None:
                yield Problem((*path, "query"), "a 'query' metric needs analysis.prometheus "
                              "(the HTTP API it asks), which is not set")
            try:
                check_syntax(metric.query)
            except TemplateSyntaxError as exc:
                yield Problem((*path, "query"), f"template error: {exc.message}")


STAGE_NAME = re.compile(r"^(fort|batch_[1-9][0-9]*)$")


@check(hosts=True)
def _analysis_stages(ctx: CheckContext) -> Iterable[Problem]:
    """A name no stage can have is refused; a stage the default plan lacks (``fort`` with
    ``strategy.fort: 0``) is not: a run's own plan may have it."""
    a = ctx.config.analysis
    if not a.enabled or ctx.spec is None or not ctx.hosts:
        return
    try:
        stages = ctx.spec.default_plan.stage_names
    except PlanError:
        return  # reported by the plan's own check
    for index, name in enumerate(a.stages):
        if not STAGE_NAME.match(name):
            yield Problem(("analysis", "stages", index), f"expected a stage name (fort, "
                          f"batch_1, batch_2, …; this plan: {', '.join(stages)}), got '{name}'",
                          did_you_mean(name, ("fort", *stages)))
