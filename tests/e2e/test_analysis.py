"""Canary analysis (issue 18) on the session sandbox: real HAProxy under load, a real Prometheus.

Each release touches 3-4 hosts (``hosts``), so the fort host is compared with hosts still on
1.0.0; windows are short (8 s) and the quiet case skips its window. The slow build runs last.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.prometheus import Prometheus
from tests.e2e.harness import E2E, Load, poll

pytestmark = pytest.mark.e2e

WINDOW = 8
LB_METRICS = [
    {"name": "5xx ratio", "lb": "5xx_ratio", "max_ratio_vs_baseline": 2, "tolerance": 0.01},
    {"name": "response time", "lb": "response_ms", "max_ratio_vs_baseline": 3, "tolerance": 5},
]
INSTANCE = 'instance="{{ host.address }}:{{ vars.app_port }}",path="/"'
PROM_5XX = (f'(sum(rate(demo_http_requests_total{{{INSTANCE},code=~"5.."}}[{WINDOW}s])) '
            f'or vector(0)) / sum(rate(demo_http_requests_total{{{INSTANCE}}}[{WINDOW}s]))')


def analysis(**overrides: Any) -> dict[str, Any]:
    return {"enabled": True, "stages": ["fort"], "window_seconds": WINDOW, "min_requests": 20,
            "inconclusive": "continue", "metrics": LB_METRICS, **overrides}


def hosts(e2e: E2E, n: int) -> list[str]:
    return [h.name for h in e2e.sandbox.hosts[:n]]


def gate_analysis(e2e: E2E, dag_id: str, run_id: str) -> dict[str, Any]:
    return e2e.api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/"
                                  f"fort.gate/xcomEntries/analysis")["value"]


def release_under_load(e2e: E2E, dag_id: str, version: str, n: int) -> tuple[dict[str, Any], Load]:
    # HAProxy's response times are moving averages over a server's last responses: earlier
    # tests (a slow build, /slow requests) would linger in them. Counters start from zero here.
    assert e2e.sandbox.haproxy("clear counters all").strip() == ""
    with Load(e2e.sandbox.frontend_url + "/", rate=50) as load:
        run = e2e.release(dag_id, {"version": version, "reason": f"e2e analysis {version}",
                                   "hosts": hosts(e2e, n)})
    print(f"\n{version}: {run['state']}\n{run.get('note')}\nload: {load.ok} ok, {load.failed} failed")
    return run, load


def test_errors_build_fails_the_fort_analysis_and_rolls_back_though_its_health_passed(
        e2e: E2E) -> None:
    dag_id = e2e.add_app("an_lb", analysis=analysis())
    run, load = release_under_load(e2e, dag_id, "2.0.0-errors", 4)
    note = run.get("note") or ""
    assert run["state"] == "failed", note
    assert note.startswith("rolled back: fort: analysis failed — 5xx ratio: fail — canary 0.0"), note
    assert "max_ratio_vs_baseline" in note and "vs baseline 0 (9 hosts" in note, note
    # Health checks alone would have passed it: the fort host's chain (health, smoke) succeeded.
    states = e2e.task_states(dag_id, run["dag_run_id"])
    assert states["fort.release[0]"] == "success", states
    assert e2e.versions() == {h.name: "1.0.0" for h in e2e.sandbox.hosts}
    assert load.failed > 0 and all(e.startswith("500") for e in load.errors), load.errors[:5]
    verdict = gate_analysis(e2e, dag_id, run["dag_run_id"])
    assert verdict["verdict"] == "fail" and verdict["metrics"][0]["verdict"] == "fail", verdict
    assert verdict["metrics"][0]["canary_requests"] >= 20, verdict


def test_no_traffic_is_inconclusive_and_the_configured_action_happens(e2e: E2E) -> None:
    dag_id = e2e.add_app("an_quiet", analysis=analysis(inconclusive="rollback"))
    run = e2e.release(dag_id, {"version": "2.0.0", "reason": "e2e quiet", "hosts": hosts(e2e, 2)})
    note = run.get("note") or ""
    assert run["state"] == "failed", note
    assert note.startswith("rolled back: fort: analysis inconclusive — 5xx ratio: inconclusive"), note
    assert "(analysis.inconclusive: rollback)" in note and "quiet" in note, note
    assert e2e.versions() == {h.name: "1.0.0" for h in e2e.sandbox.hosts}


@pytest.fixture(scope="module")
def prometheus(e2e_stack: E2E) -> Iterator[Prometheus]:
    """A real Prometheus scraping every sandbox host's /metrics (targets from the inventory)."""
    prom = Prometheus(e2e_stack.sandbox.dir, e2e_stack.sandbox.inventory_path)
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()


def test_prometheus_rate_comparison_fails_the_errors_build_and_the_good_build_passes_all(
        e2e: E2E, prometheus: Prometheus) -> None:
    """The PromQL rate comparison first, so it is the rule that decides; the good build then
    passes it and the load balancer's rules of the first test alike. The gate waits out both
    windows in the triggerer."""
    poll(lambda: len(prometheus.targets_up()) == 10 and all(prometheus.targets_up().values()),
         30, "prometheus scraping every sandbox host")
    metric = {"name": "5xx rate (prometheus)", "query": PROM_5XX, "max_ratio_vs_baseline": 2,
              "tolerance": 0.01}
    # defer_after_seconds 0: both windows wait in the triggerer (as a long bake's would).
    dag_id = e2e.add_app("an_prom", analysis=analysis(
        metrics=[metric, *LB_METRICS], prometheus={"url": prometheus.url},
        defer_after_seconds=0))
    bad, _ = release_under_load(e2e, dag_id, "2.0.0-errors", 3)
    note = bad.get("note") or ""
    assert bad["state"] == "failed", note
    assert note.startswith("rolled back: fort: analysis failed — 5xx rate (prometheus): fail — "
                           "canary 0.0"), note
    states = e2e.task_states(dag_id, bad["dag_run_id"])
    assert states["fort.release[0]"] == "success", states
    prom = gate_analysis(e2e, dag_id, bad["dag_run_id"])["metrics"][0]
    assert prom["verdict"] == "fail" and prom["baseline"] == 0 and prom["canary"] > 0.01, prom
    assert e2e.versions() == {h.name: "1.0.0" for h in e2e.sandbox.hosts}

    good, load = release_under_load(e2e, dag_id, "2.0.0", 3)
    note = good.get("note") or ""
    assert good["state"] == "success", note
    assert "analysis fort: pass (3 metrics, 8s window, baseline: 9 host(s) still on the " \
           "previous version)" in note, note
    assert load.failed == 0, load.errors[:5]
    assert [e2e.sandbox.served_version(h) for h in hosts(e2e, 3)] == ["2.0.0"] * 3


def test_slow_build_fails_the_latency_rule(e2e: E2E) -> None:
    dag_id = e2e.add_app("an_lb", analysis=analysis())
    run, _ = release_under_load(e2e, dag_id, "2.0.0-latency", 3)
    note = run.get("note") or ""
    assert run["state"] == "failed", note
    assert note.startswith("rolled back: fort: analysis failed — response time: fail"), note
    assert e2e.versions() == {h.name: "1.0.0" for h in e2e.sandbox.hosts}
