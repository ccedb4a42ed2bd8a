"""Canary analysis, the pure part: rules, verdicts, the window's numbers and the gate's effect."""

from __future__ import annotations

import httpx
import pytest

from tars_operators.config.analysis import Metric
from tars_operators.errors import AnalysisError
from tars_operators.hooks.lb.base import ServerCounters
from tars_operators.hooks.lb.runtime_api import parse_stat_counters
from tars_operators.hooks.prometheus import PrometheusClient
from tars_operators.release.analysis import (
    Sample, StageAnalysis, Verdict, after_analysis, judge, lb_sample, mean_sample, stage_verdict,
)
from tars_operators.release.machine import Decision, GateDecision
from tars_operators.release.observe import quiet, quiet_analysis
from tests.unit.lb.test_runtime_api import HEADER

pytestmark = pytest.mark.unit

RATIO = Metric(name="5xx ratio", lb="5xx_ratio", max_ratio_vs_baseline=2, tolerance=0.01)
ABSOLUTE = Metric(name="latency", lb="response_ms", max_absolute=100)
BOTH = Metric(name="both", lb="5xx_ratio", max_absolute=0.5, max_ratio_vs_baseline=2)
OWN_MIN = Metric(name="own", lb="5xx_ratio", max_absolute=1, min_requests=5)
QUERY = Metric(name="prom", query="x", max_ratio_vs_baseline=2)

# metric, canary, baseline → verdict, words the rule names
CASES = {
    "5% errors vs a clean baseline fails": (RATIO, Sample(0.05, 100), Sample(0.0, 900),
                                            Verdict.FAIL, "0.05 > limit 0.01"),
    "no errors passes": (RATIO, Sample(0.0, 100), Sample(0.0, 900), Verdict.PASS, "<= limit 0.01"),
    "within the ratio passes": (RATIO, Sample(0.03, 100), Sample(0.02, 900), Verdict.PASS,
                                "limit 0.05 = baseline 0.02 × 2 + 0.01"),
    "quiet canary is inconclusive, not pass": (RATIO, Sample(0.0, 3), Sample(0.0, 900),
                                               Verdict.INCONCLUSIVE, "canary answered 3"),
    "quiet baseline is inconclusive": (RATIO, Sample(0.05, 100), Sample(0.0, 10),
                                       Verdict.INCONCLUSIVE, "baseline answered 10"),
    "no baseline for a ratio is inconclusive": (RATIO, Sample(0.05, 100), None,
                                                Verdict.INCONCLUSIVE, "no baseline"),
    "no canary data is inconclusive": (QUERY, Sample(None), Sample(0.1), Verdict.INCONCLUSIVE,
                                       "no data"),
    "absolute above fails": (ABSOLUTE, Sample(210.0, 60), None, Verdict.FAIL, "210 > 100"),
    "absolute below passes without a baseline": (ABSOLUTE, Sample(2.0, 60), None, Verdict.PASS,
                                                 "2 <= 100"),
    "absolute decides before the ratio": (BOTH, Sample(0.6, 100), None, Verdict.FAIL,
                                          "max_absolute"),
    "a metric's own min_requests wins": (OWN_MIN, Sample(0.0, 6), None, Verdict.PASS, "<= 1"),
    "query metrics count no requests": (QUERY, Sample(0.2), Sample(0.2), Verdict.PASS, "<="),
}


@pytest.mark.parametrize("case", CASES)
def test_rule_table(case: str) -> None:
    metric, canary, baseline, verdict, words = CASES[case]
    result = judge(metric, canary, baseline, min_requests=50)
    assert result.verdict is verdict, result.line()
    assert words in result.rule, result.line()
    assert result.line().startswith(f"{metric.name}: {verdict.value} — canary ")


def test_stage_verdict_fail_beats_inconclusive_beats_pass() -> None:
    fail = judge(RATIO, Sample(0.05, 100), Sample(0.0, 900), min_requests=50)
    quiet_ = judge(RATIO, Sample(0.0, 1), Sample(0.0, 900), min_requests=50)
    ok = judge(ABSOLUTE, Sample(1.0, 100), None, min_requests=50)
    assert stage_verdict([ok, quiet_, fail]) is Verdict.FAIL
    assert stage_verdict([ok, quiet_]) is Verdict.INCONCLUSIVE
    assert stage_verdict([ok]) is Verdict.PASS
    assert stage_verdict([]) is Verdict.INCONCLUSIVE


def counters(server: str, responses: int, r5xx: int = 0, rtime: float = 1.0,
             errors: int = 0) -> ServerCounters:
    return ServerCounters(server, responses, 0, r5xx, errors, rtime, rtime + 1)


def test_lb_sample_uses_the_window_deltas_and_weights_times_by_responses() -> None:
    start = {"a": counters("a", 1000, 0), "b": counters("b", 1000, 10)}
    end = {"a": counters("a", 1100, 5, rtime=200.0), "b": counters("b", 1300, 10, rtime=2.0)}
    ratio = lb_sample("5xx_ratio", ["a"], start, end)
    assert (ratio.value, ratio.requests) == (0.05, 100)
    both = lb_sample("5xx_ratio", ["a", "b"], start, end)
    assert both.value == pytest.approx(5 / 400) and both.requests == 400
    latency = lb_sample("response_ms", ["a", "b"], start, end)
    assert latency.value == pytest.approx((200 * 100 + 2 * 300) / 400)
    assert lb_sample("5xx_ratio", ["a"], end, end) == Sample(None, 0, ("a",))


def test_lb_sample_after_a_counter_reset_and_before_the_release() -> None:
    start = {"a": counters("a", 5000, 50)}
    end = {"a": counters("a", 100, 1)}  # HAProxy restarted: the counters began again
    assert lb_sample("5xx_ratio", ["a"], start, end).value == pytest.approx(0.01)
    # no start: totals since the LB started (the same hosts' numbers before the release)
    assert lb_sample("5xx_ratio", ["a"], {}, start).value == pytest.approx(0.01)
    err = lb_sample("error_ratio", ["a"], {}, {"a": counters("a", 100, 1, errors=3)})
    assert err.value == pytest.approx(0.04)


def test_mean_sample_skips_hosts_without_data() -> None:
    assert mean_sample({"a": 0.1, "b": None, "c": 0.3}).value == pytest.approx(0.2)
    assert mean_sample({"a": None}).value is None


def analysis(verdict: Verdict) -> StageAnalysis:
    metric = {Verdict.FAIL: (Sample(0.05, 100), Sample(0.0, 900)),
              Verdict.PASS: (Sample(0.0, 100), Sample(0.0, 900)),
              Verdict.INCONCLUSIVE: (Sample(0.0, 2), Sample(0.0, 900))}[verdict]
    result = judge(RATIO, *metric, min_requests=50)
    return StageAnalysis("fort", verdict, (result,), 10.0, "9 host(s) still on the previous version")


GO = GateDecision(Decision.CONTINUE, "fort: 1/1 hosts ok")
# verdict, on_failure, inconclusive → decision, asks approval, words in the reason
EFFECTS = {
    "fail rolls back": (Verdict.FAIL, "rollback", "continue", Decision.ROLLBACK, False,
                        "fort: analysis failed — 5xx ratio: fail"),
    "fail halts with on_failure halt": (Verdict.FAIL, "halt", "continue", Decision.HALT, False,
                                        "analysis failed"),
    "pass goes on": (Verdict.PASS, "rollback", "rollback", Decision.CONTINUE, False,
                     "analysis passed"),
    "inconclusive continue": (Verdict.INCONCLUSIVE, "rollback", "continue", Decision.CONTINUE,
                              False, "analysis inconclusive"),
    "inconclusive rollback": (Verdict.INCONCLUSIVE, "halt", "rollback", Decision.ROLLBACK,
                              False, "(analysis.inconclusive: rollback)"),
    "inconclusive approval": (Verdict.INCONCLUSIVE, "rollback", "approval", Decision.CONTINUE,
                              True, "asking for approval"),
}


@pytest.mark.parametrize("case", EFFECTS)
def test_the_gate_after_a_verdict(case: str) -> None:
    verdict, on_failure, inconclusive, decision, ask, words = EFFECTS[case]
    new, asks = after_analysis(GO, analysis(verdict), on_failure=on_failure,
                               inconclusive=inconclusive)
    assert (new.decision, asks) == (decision, ask)
    assert words in new.reason, new.reason


def test_a_gate_already_rolling_back_is_left_alone() -> None:
    over = GateDecision(Decision.ROLLBACK, "fort: 1 host(s) failed")
    assert after_analysis(over, analysis(Verdict.PASS), on_failure="rollback",
                          inconclusive="continue") == (over, False)


def test_quiet_app_skips_the_window() -> None:
    before = {"a": counters("a", 10), "b": counters("b", 20)}
    assert quiet(before, dict(before), ["a", "b"])
    assert not quiet(before, {"a": counters("a", 10), "b": counters("b", 21)}, ["a", "b"])
    assert not quiet({}, before, ["a"])  # nothing known before: watch the window
    result = quiet_analysis("fort", 10.0, [RATIO, ABSOLUTE])
    assert result.verdict is Verdict.INCONCLUSIVE and len(result.results) == 2
    assert "quiet" in result.headline()


def stat_row(server: str, hrsp: tuple[int, int, int, int, int, int], econ: int, eresp: int,
             rtime: int, ttime: int) -> str:
    names = HEADER.lstrip("# ").rstrip(",").split(",")
    fields = dict.fromkeys(names, "")
    fields.update(pxname="demo", svname=server, status="UP", econ=str(econ), eresp=str(eresp),
                  rtime=str(rtime), ttime=str(ttime))
    for key, n in zip(("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx",
                       "hrsp_other"), hrsp):
        fields[key] = str(n)
    return ",".join(fields[n] for n in names)


def test_show_stat_counters_per_server_of_the_backend() -> None:
    stat = "\n".join([HEADER, stat_row("host01", (0, 95, 0, 1, 5, 0), 1, 2, 210, 212),
                      stat_row("host02", (0, 300, 0, 0, 0, 0), 0, 0, 1, 2),
                      "demo,BACKEND,0,0,4,4,,,,,,,,,,,,UP", ""])
    found = parse_stat_counters(stat, "demo")
    assert found["host01"] == ServerCounters("host01", 101, 1, 5, 3, 210.0, 212.0)
    assert found["host02"].responses == 300 and set(found) == {"host01", "host02"}
    assert parse_stat_counters(stat, "other") == {}


def prom(answer: dict | str, status: int = 200) -> PrometheusClient:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query" and request.url.params["query"] == "q"
        if isinstance(answer, str):
            return httpx.Response(status, text=answer)
        return httpx.Response(status, json=answer)
    return PrometheusClient("http://prom:9090/", transport=httpx.MockTransport(handler))


def vector(*values: str) -> dict:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1.0, v]} for v in values]}}


def test_prometheus_numbers() -> None:
    assert prom(vector("0.05")).value("q") == 0.05
    assert prom(vector()).value("q") is None  # no series: no data
    assert prom(vector("NaN")).value("q") is None  # 0/0: no traffic
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "2"]}}
    assert prom(scalar).value("q") == 2.0


@pytest.mark.parametrize("answer,status,words", [
    (vector("1", "2"), 200, "returned 2 series"),
    ({"status": "error", "errorType": "bad_data", "error": "parse error"}, 400, "bad_data: parse error"),
    ("<html>", 502, "not a JSON answer"),
])
def test_prometheus_refusals_say_why(answer: dict | str, status: int, words: str) -> None:
    with pytest.raises(AnalysisError, match="prometheus at http://prom:9090") as err:
        prom(answer, status).value("q", what="5xx for host01")
    assert words in str(err.value) and "5xx for host01" in str(err.value)


def test_a_window_crosses_a_deferral_as_json() -> None:
    from tars_operators.release.observe import Watch

    watch = Watch("fort", "2.0.0", ("a",), ("b", "c"), {"a": {"server": "a", "responses": 1,
                  "r4xx": 0, "r5xx": 0, "errors": 0, "response_ms": 1.0, "total_ms": 2.0}},
                  {}, 1700000000.0)
    import json

    assert Watch.from_dict(json.loads(json.dumps(watch.as_dict()))) == watch
