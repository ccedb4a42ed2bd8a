"""Canary analysis, the reading: the window's numbers from the LB's counters and Prometheus.

The canary is the stage's hosts; the baseline the app's hosts this run has not released yet
(still on the previous version) or, when none is left, the same hosts before the release:
their LB totals when the stage began (``before``) and their queries evaluated at that time.
Judging is ``release/analysis.py``'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tars_operators.config.analysis import Metric
from tars_operators.config.spec import AppSpec
from tars_operators.config.templating import host_context, render
from tars_operators.errors import AnalysisError, TarsError
from tars_operators.hooks.lb.base import ServerCounters
from tars_operators.hooks.lb.provider import load_balancer_for
from tars_operators.hooks.prometheus import PrometheusClient
from tars_operators.release.analysis import (
    MetricResult, Sample, StageAnalysis, Verdict, judge, lb_sample, mean_sample, stage_verdict,
)
from tars_operators.tasklog import TaskLog


def needs_counters(spec: AppSpec) -> bool:
    return any(m.lb for m in spec.config.analysis.metrics)


def snapshot(spec: AppSpec, hosts: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The LB counters of ``hosts`` now, JSON-able (an XCom); empty when no metric reads them."""
    if not needs_counters(spec) or not hosts:
        return {}
    with load_balancer_for(spec) as lb:
        found = lb.counters([spec.host(h) for h in hosts])
    return {h: asdict(c) for h, c in found.items()}


def _counters(raw: Mapping[str, Mapping[str, Any]] | None) -> dict[str, ServerCounters]:
    return {h: ServerCounters(**c) for h, c in (raw or {}).items()}


@dataclass(frozen=True)
class Watch:
    """One stage's window: who is watched and the LB counters at its start (JSON-able, so a
    gate waiting in the triggerer carries it across)."""

    stage: str
    version: str
    canary: tuple[str, ...]
    baseline: tuple[str, ...]
    start: dict[str, dict[str, Any]]
    before: dict[str, dict[str, Any]]
    before_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Watch:
        return cls(**{**data, "canary": tuple(data["canary"]), "baseline": tuple(data["baseline"])})


def begin(spec: AppSpec, stage: str, version: str, canary: Sequence[str],
          baseline: Sequence[str], *, before: Mapping[str, Mapping[str, Any]] | None,
          before_at: float | None, log: TaskLog) -> Watch | StageAnalysis:
    """The window's start: the LB counters now; a quiet app's verdict at once."""
    a = spec.config.analysis
    window = a.window(spec.config.strategy.bake_seconds)
    watched = [*canary, *baseline]
    log.info("analysis %s: watching %s for %gs against %s", stage, ", ".join(canary), window,
             f"{len(baseline)} host(s) still on the previous version" if baseline
             else "the same hosts before the release")
    try:
        start = snapshot(spec, watched)
    except TarsError as exc:
        raise AnalysisError(f"analysis {stage}: cannot read the load balancer's counters: {exc}") from exc
    if quiet(_counters(before), _counters(start), watched):
        log.info("analysis %s: no request reached %s since the stage began: the app is "
                 "quiet, the window is skipped", stage, ", ".join(watched))
        return quiet_analysis(stage, window, a.metrics)
    return Watch(stage, version, tuple(canary), tuple(baseline), start,
                 {h: dict(c) for h, c in (before or {}).items()}, before_at)


def finish(spec: AppSpec, watch: Watch, *, log: TaskLog) -> StageAnalysis:
    """The window's end: read the numbers again and judge every metric of ``analysis``."""
    a = spec.config.analysis
    window = a.window(spec.config.strategy.bake_seconds)
    canary, baseline = watch.canary, watch.baseline
    try:
        end = _counters(snapshot(spec, [*canary, *baseline]))
    except TarsError as exc:
        raise AnalysisError(f"analysis {watch.stage}: cannot read the load balancer's counters: "
                            f"{exc}") from exc
    start, before = _counters(watch.start), _counters(watch.before)
    prom = None
    if a.prometheus is not None:
        prom = PrometheusClient(a.prometheus.url, timeout=a.prometheus.timeout_seconds)
    results = []
    for metric in a.metrics:
        if metric.lb is not None:
            result = _judge_lb(metric, canary, baseline, start, end, before,
                               min_requests=a.min_requests)
        else:
            assert prom is not None and a.prometheus is not None  # lint: query needs prometheus
            result = _judge_query(spec, watch.version, metric, prom, canary,
                                  list(baseline)[:a.prometheus.max_baseline_hosts],
                                  watch.before_at, min_requests=a.min_requests)
        log.info("analysis %s: %s", watch.stage, result.line())
        results.append(result)
    baseline_text = (f"{len(baseline)} host(s) still on the previous version" if baseline
                     else "the same hosts before the release")
    return StageAnalysis(watch.stage, stage_verdict(results), tuple(results), window,
                         baseline_text)


def observe(spec: AppSpec, stage: str, version: str, canary: Sequence[str],
            baseline: Sequence[str], *, before: Mapping[str, Mapping[str, Any]] | None,
            before_at: float | None, log: TaskLog,
            sleep: Callable[[float], None] = time.sleep) -> StageAnalysis:
    """Watch the window inline (``begin``, sleep, ``finish``)."""
    watch = begin(spec, stage, version, canary, baseline, before=before, before_at=before_at,
                  log=log)
    if isinstance(watch, StageAnalysis):
        return watch
    sleep(spec.config.analysis.window(spec.config.strategy.bake_seconds))
    return finish(spec, watch, log=log)


def quiet(before: Mapping[str, ServerCounters], now: Mapping[str, ServerCounters],
          hosts: Sequence[str]) -> bool:
    """No response at all from ``hosts`` between the stage's start and now (LB counters of
    every host known at both times; without them nothing can be said)."""
    if not hosts or any(h not in before or h not in now for h in hosts):
        return False
    return all(now[h].responses == before[h].responses for h in hosts)


def quiet_analysis(stage: str, window: float, metrics: Sequence[Metric]) -> StageAnalysis:
    """Every metric inconclusive: no traffic reached the app while the stage ran."""
    why = "min_requests: no request reached the app's hosts since the stage began (quiet)"
    results = tuple(MetricResult(m.name, Verdict.INCONCLUSIVE, Sample(None, 0), None, why)
                    for m in metrics)
    return StageAnalysis(stage, Verdict.INCONCLUSIVE, results, 0.0,
                         "none (no traffic: the window was skipped)")


def _judge_lb(metric: Metric, canary: Sequence[str], baseline: Sequence[str],
              start: Mapping[str, ServerCounters], end: Mapping[str, ServerCounters],
              before: Mapping[str, ServerCounters], *, min_requests: int) -> MetricResult:
    assert metric.lb is not None
    ours = lb_sample(metric.lb, canary, start, end)
    if baseline:
        base: Sample | None = lb_sample(metric.lb, baseline, start, end)
    elif before:
        base = lb_sample(metric.lb, canary, {}, before)
    else:
        base = None
    return judge(metric, ours, base, min_requests=min_requests)


def _judge_query(spec: AppSpec, version: str, metric: Metric, prom: PrometheusClient,
                 canary: Sequence[str], baseline: Sequence[str], before_at: float | None, *,
                 min_requests: int) -> MetricResult:
    assert metric.query is not None

    def values(hosts: Sequence[str], at: float | None) -> dict[str, float | None]:
        out = {}
        for name in hosts:
            query = render(metric.query or "", host_context(spec, spec.host(name), version))
            out[name] = prom.value(query, at=at, what=f"{metric.name} for {name}")
        return out

    ours = mean_sample(values(canary, None))
    if baseline:
        base: Sample | None = mean_sample(values(baseline, None))
    elif before_at is not None:
        base = mean_sample(values(canary, before_at))
    else:
        base = None
    return judge(metric, ours, base, min_requests=min_requests)


def failed_reading(stage: str, window: float, exc: TarsError) -> StageAnalysis:
    """A window whose numbers could not be read: inconclusive, saying why."""
    result = MetricResult("reading", Verdict.INCONCLUSIVE, Sample(None), None, str(exc))
    return StageAnalysis(stage, Verdict.INCONCLUSIVE, (result,), window, "unavailable")


ANALYSIS_BEFORE = "analysis_before"  # the stage entry's XCom: {"at": unix time, "counters": …}


def record_before(spec: AppSpec, stage: str, hosts: Sequence[str], ti: Any, log: TaskLog) -> None:
    """At a judged stage's entry: its hosts' LB counters and the time, before any is touched
    (the baseline when no host on the previous version is left)."""
    if not spec.config.analysis.judges(stage) or not hosts:
        return
    try:  # every host: the baseline's numbers then tell whether the app has traffic at all
        counters = snapshot(spec, [h.name for h in spec.hosts])
    except TarsError as exc:
        log.warning("analysis %s: cannot read the LB's counters before the release: %s",
                    stage, exc)
        counters = {}
    ti.xcom_push(key=ANALYSIS_BEFORE, value={"at": time.time(), "counters": counters})


def analysis_headlines(ti: Any, stages: Sequence[str]) -> list[str]:
    """Each judged stage's verdict line, from its gate's XCom ``analysis`` (for the run note)."""
    from tars_operators.release.machine import gate_id

    lines = []
    for stage in stages:
        found = ti.xcom_pull(task_ids=gate_id(stage), key="analysis")
        if isinstance(found, dict) and found.get("headline"):
            lines.append(str(found["headline"]))
    return lines
