"""The ``analysis`` section: canary analysis of a stage's real traffic (docs/config.md).

Kept beside ``schema.py`` (which only adds the field) so the section reads in one place. Each
metric reads either the load balancer's per-server counters (``lb``) or a Prometheus instant
query (``query``), and has a rule: ``max_absolute``, ``max_ratio_vs_baseline`` (+ ``tolerance``)
and ``min_requests`` (fewer requests in the window → inconclusive, not pass).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# What the load balancer's counters give, per server (HAProxy `show stat`), over the window:
# ratios of the responses answered in it, and HAProxy's moving-average times (ms).
LB_METRICS = ("5xx_ratio", "4xx_ratio", "error_ratio", "response_ms", "total_ms")
LbMetric = Literal["5xx_ratio", "4xx_ratio", "error_ratio", "response_ms", "total_ms"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Metric(_Model):
    """One metric and its rule: fail above ``max_absolute`` or above baseline × ratio + tolerance."""

    name: Annotated[str, Field(min_length=1, max_length=80)]
    lb: LbMetric | None = None
    query: Annotated[str, Field(min_length=1)] | None = None  # PromQL, templated per host
    max_absolute: float | None = None
    max_ratio_vs_baseline: Annotated[float, Field(gt=0)] | None = None
    tolerance: Annotated[float, Field(ge=0)] = 0.0  # added to baseline × ratio (noise floor)
    min_requests: Annotated[int, Field(ge=0)] | None = None  # default: analysis.min_requests

    @model_validator(mode="after")
    def _one_source_one_rule(self) -> Metric:
        if (self.lb is None) == (self.query is None):
            raise ValueError("expected exactly one of 'lb' (a load balancer counter) or "
                             "'query' (a Prometheus query)")
        if self.max_absolute is None and self.max_ratio_vs_baseline is None:
            raise ValueError("expected a rule: 'max_absolute' and/or 'max_ratio_vs_baseline'")
        return self


class Prometheus(_Model):
    url: Annotated[str, Field(pattern=r"^https?://")]  # the HTTP API's base, e.g. http://prom:9090
    timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    # Hosts queried for the baseline at most (the first ones still on the previous version).
    max_baseline_hosts: Annotated[int, Field(ge=1)] = 20


class Analysis(_Model):
    """Off by default. Judged at each listed stage's gate, before it decides."""

    enabled: bool = False
    stages: tuple[str, ...] = ("fort",)  # stage names: fort, batch_1, …
    # The observation window; unset: the stage's bake (strategy.bake_seconds) is the window.
    window_seconds: Annotated[float, Field(gt=0, le=3600)] | None = None
    min_requests: Annotated[int, Field(ge=0)] = 50  # per side (canary, baseline) in the window
    # Windows longer than this wait in the triggerer (no worker slot held); shorter ones inline.
    defer_after_seconds: Annotated[float, Field(ge=0)] = 30.0
    inconclusive: Literal["continue", "approval", "rollback"] = "continue"
    prometheus: Prometheus | None = None
    metrics: tuple[Metric, ...] = ()

    def window(self, bake_seconds: float) -> float:
        """Seconds the gate observes: ``window_seconds``, else the bake."""
        return self.window_seconds if self.window_seconds is not None else bake_seconds

    def uses_bake(self) -> bool:
        """The bake is the window: the analysed stages' bake runs inside their gate."""
        return self.enabled and self.window_seconds is None

    def judges(self, stage: str) -> bool:
        return self.enabled and stage in self.stages and bool(self.metrics)
