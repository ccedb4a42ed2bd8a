"""Canary analysis, pure: numbers of a stage's hosts (the canary) and of a baseline → a verdict.

The gate (``operators/gate.py``) reads the numbers (``release/observe.py``); this module only
judges. A metric's rule, in order: too few requests in the window → inconclusive (a quiet
canary proves nothing); no number → inconclusive; above ``max_absolute`` → fail; above
baseline × ``max_ratio_vs_baseline`` + ``tolerance`` → fail (no usable baseline →
inconclusive); else pass. The stage: any fail → fail, else any inconclusive → inconclusive,
else pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from tars_operators.config.analysis import Metric
from tars_operators.hooks.lb.base import ServerCounters
from tars_operators.release.machine import Decision, GateDecision

if TYPE_CHECKING:
    from tars_operators.config.schema import AppConfig


class Verdict(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Sample:
    """One side's number for a metric: its value (None: no data) and requests in the window
    (None: the source does not count requests)."""

    value: float | None
    requests: int | None = None
    hosts: tuple[str, ...] = ()

    def describe(self) -> str:
        value = "no data" if self.value is None else fmt(self.value)
        seen = [f"{len(self.hosts)} host{'s' if len(self.hosts) != 1 else ''}"] if self.hosts else []
        if self.requests is not None:
            seen.append(f"{self.requests} requests")
        return f"{value} ({', '.join(seen)})" if seen else value


@dataclass(frozen=True)
class MetricResult:
    """A metric's verdict, its numbers and the rule that decided."""

    name: str
    verdict: Verdict
    canary: Sample
    baseline: Sample | None
    rule: str  # e.g. "max_ratio_vs_baseline: limit 0.01 = 0 × 2 + 0.01"

    def line(self) -> str:
        base = f" vs baseline {self.baseline.describe()}" if self.baseline is not None else ""
        return f"{self.name}: {self.verdict.value} — canary {self.canary.describe()}{base}; {self.rule}"

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.name, "verdict": self.verdict.value, "rule": self.rule,
                "canary": self.canary.value, "canary_requests": self.canary.requests,
                "baseline": None if self.baseline is None else self.baseline.value,
                "baseline_requests": None if self.baseline is None else self.baseline.requests,
                "line": self.line()}


@dataclass(frozen=True)
class StageAnalysis:
    """A stage's verdict: every metric's result, the window and what the baseline was."""

    stage: str
    verdict: Verdict
    results: tuple[MetricResult, ...]
    window_seconds: float
    baseline: str  # e.g. "9 hosts still on the previous version"

    @property
    def deciding(self) -> MetricResult | None:
        """The first result with the stage's verdict (the rule that decided)."""
        return next((r for r in self.results if r.verdict is self.verdict), None)

    def headline(self) -> str:
        why = self.deciding
        tail = f" — {why.line()}" if why is not None and self.verdict is not Verdict.PASS else ""
        return (f"analysis {self.stage}: {self.verdict.value} ({len(self.results)} metric"
                f"{'s' if len(self.results) != 1 else ''}, {fmt(self.window_seconds)}s window, "
                f"baseline: {self.baseline}){tail}")

    def lines(self) -> list[str]:
        return [self.headline(), *(f"analysis {self.stage}: {r.line()}" for r in self.results)]

    def as_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "verdict": self.verdict.value,
                "window_seconds": self.window_seconds, "baseline": self.baseline,
                "headline": self.headline(), "metrics": [r.as_dict() for r in self.results]}


def fmt(value: float) -> str:
    return f"{value:.4g}"


def judge(metric: Metric, canary: Sample, baseline: Sample | None, *,
          min_requests: int) -> MetricResult:
    """One metric's verdict under its rule."""
    need = metric.min_requests if metric.min_requests is not None else min_requests

    def result(verdict: Verdict, rule: str) -> MetricResult:
        return MetricResult(metric.name, verdict, canary, baseline, rule)

    if canary.requests is not None and canary.requests < need:
        return result(Verdict.INCONCLUSIVE, f"min_requests: canary answered {canary.requests} "
                      f"requests in the window, fewer than {need}")
    if canary.value is None:
        return result(Verdict.INCONCLUSIVE, "no data for the canary hosts")
    if metric.max_absolute is not None and canary.value > metric.max_absolute:
        return result(Verdict.FAIL, f"max_absolute: {fmt(canary.value)} > {fmt(metric.max_absolute)}")
    ratio = metric.max_ratio_vs_baseline
    if ratio is None:
        assert metric.max_absolute is not None
        return result(Verdict.PASS, f"max_absolute: {fmt(canary.value)} <= {fmt(metric.max_absolute)}")
    if baseline is None or baseline.value is None:
        return result(Verdict.INCONCLUSIVE, "max_ratio_vs_baseline: no baseline numbers")
    if baseline.requests is not None and baseline.requests < need:
        return result(Verdict.INCONCLUSIVE, f"min_requests: baseline answered {baseline.requests} "
                      f"requests in the window, fewer than {need}")
    limit = baseline.value * ratio + metric.tolerance
    how = f"limit {fmt(limit)} = baseline {fmt(baseline.value)} × {fmt(ratio)}" + (
        f" + {fmt(metric.tolerance)}" if metric.tolerance else "")
    if canary.value > limit:
        return result(Verdict.FAIL, f"max_ratio_vs_baseline: {fmt(canary.value)} > {how}")
    return result(Verdict.PASS, f"max_ratio_vs_baseline: {fmt(canary.value)} <= {how}")


def stage_verdict(results: Iterable[MetricResult]) -> Verdict:
    verdicts = {r.verdict for r in results}
    if Verdict.FAIL in verdicts:
        return Verdict.FAIL
    if Verdict.INCONCLUSIVE in verdicts or not verdicts:
        return Verdict.INCONCLUSIVE
    return Verdict.PASS


# ---- the load balancer's counters over a window --------------------------------------------

def delta(start: ServerCounters | None, end: ServerCounters) -> ServerCounters:
    """``end`` minus ``start`` for the counts (a counter that went down was reset: ``end``
    is then all there is); the moving-average times are ``end``'s."""
    if start is None or end.responses < start.responses:
        return end
    return ServerCounters(
        server=end.server, responses=end.responses - start.responses,
        r4xx=max(0, end.r4xx - start.r4xx), r5xx=max(0, end.r5xx - start.r5xx),
        errors=max(0, end.errors - start.errors),
        response_ms=end.response_ms, total_ms=end.total_ms,
    )


def lb_sample(metric: str, hosts: Iterable[str], start: Mapping[str, ServerCounters],
              end: Mapping[str, ServerCounters]) -> Sample:
    """One side's number for an ``lb`` metric: ratios over the summed window counts, times
    weighted by each host's responses in the window. ``start`` empty: totals since the LB
    started (the same hosts' numbers before the release)."""
    names = tuple(h for h in hosts if h in end)
    windows = [delta(start.get(h), end[h]) for h in names]
    answered = sum(w.responses for w in windows)
    if not answered:
        return Sample(None, 0, names)
    if metric in ("response_ms", "total_ms"):
        total = sum(getattr(w, metric) * w.responses for w in windows)
        return Sample(total / answered, answered, names)
    bad = sum(w.r5xx if metric == "5xx_ratio" else w.r4xx if metric == "4xx_ratio"
              else w.r5xx + w.errors for w in windows)
    return Sample(bad / answered, answered, names)


def mean_sample(values: Mapping[str, float | None]) -> Sample:
    """One side's number for a query metric: the mean of the hosts that have one."""
    known = [v for v in values.values() if v is not None]
    return Sample(sum(known) / len(known) if known else None, None, tuple(values))


# ---- what the gate does with a verdict ------------------------------------------------------

def after_analysis(verdict: GateDecision, analysis: StageAnalysis, *, on_failure: str,
                   inconclusive: str) -> tuple[GateDecision, bool]:
    """The gate's decision once the stage's analysis is in, and whether to ask for approval.

    Only a decision to go on is changed: fail → ``on_failure`` (a verdict is about the
    version, so no host budget absorbs it); inconclusive → ``analysis.inconclusive``.
    """
    if verdict.decision not in (Decision.CONTINUE, Decision.FINISH):
        return verdict, False
    stage, why = analysis.stage, analysis.deciding
    line = why.line() if why is not None else "no metric"
    if analysis.verdict is Verdict.FAIL:
        return GateDecision(Decision(on_failure), f"{stage}: analysis failed — {line}"), False
    if analysis.verdict is Verdict.PASS:
        return GateDecision(verdict.decision, f"{verdict.reason}; analysis passed"), False
    if inconclusive == "rollback":
        return GateDecision(Decision.ROLLBACK, f"{stage}: analysis inconclusive — {line} "
                            f"(analysis.inconclusive: rollback)"), False
    ask = inconclusive == "approval" and verdict.decision is Decision.CONTINUE
    then = "asking for approval" if ask else "going on"
    return GateDecision(verdict.decision, f"{verdict.reason}; analysis inconclusive — {line} "
                        f"({then}: analysis.inconclusive: {inconclusive})"), ask


# ---- the DAG's shape for analysed stages (the builder and the gate ask here) ----------------

def analysis_only_approval(config: AppConfig, stage: str) -> bool:
    """``stage`` has an approval only because ``analysis.inconclusive`` is approval: the gate
    asks it when the verdict is inconclusive and goes past it otherwise."""
    a, approval = config.analysis, config.strategy.approval
    return (a.inconclusive == "approval" and a.judges(stage)
            and not (approval.enabled and stage in approval.after))


def approval_stages(config: AppConfig, stages: Iterable[str]) -> set[str]:
    """Stages followed by an approval: ``strategy.approval.after`` and analysis's own."""
    approval = config.strategy.approval
    return {s for s in stages if (approval.enabled and s in approval.after)
            or analysis_only_approval(config, s)}


def bake_in_gate(config: AppConfig, stage: str) -> bool:
    """The stage's bake is its analysis window, watched by its gate (no bake task after it)."""
    return config.analysis.uses_bake() and config.analysis.judges(stage)
