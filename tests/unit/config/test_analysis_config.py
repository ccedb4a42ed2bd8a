"""The ``analysis`` section: what lint refuses and what ``tars plan`` shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tars_operators.cli import main

pytestmark = pytest.mark.unit

BASE = """\
app: {name: shop, owner: team}
artifact: {url: "http://127.0.0.1:8000/x-{{ version }}.tgz", checksum: {url: "{{ url }}.sha256"}}
hosts: {list: [{name: a1, address: 127.0.0.31}, {name: a2, address: 127.0.0.32},
               {name: a3, address: 127.0.0.33}, {name: a4, address: 127.0.0.34}]}
service: {start: "run start", stop: "run stop"}
traffic:
  provider: PROVIDER
  haproxy: {socket: /run/haproxy.sock, backend: shop}
  command: {drain: "lb out {{ host.name }}", enable: "lb in {{ host.name }}"}
  min_in_service: 1
"""
ANALYSIS = """\
analysis:
  enabled: true
  stages: [STAGES]
  window_seconds: WINDOW
  inconclusive: approval
  metrics:
    - {name: 5xx ratio, lb: 5xx_ratio, max_ratio_vs_baseline: 2, tolerance: 0.01}
    - {name: p99, query: 'p99{instance="{{ host.address }}"}', max_absolute: 0.5}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "configs/apps").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TARS_CONFIG_DIR", raising=False)
    return tmp_path


def write(workdir: Path, *, provider: str = "haproxy", stages: str = "fort",
          window: str = "30", prometheus: bool = True) -> None:
    text = BASE.replace("PROVIDER", provider) + ANALYSIS.replace("STAGES", stages).replace(
        "WINDOW", window)
    if window == "null":
        text = text.replace("  window_seconds: null\n", "")
    if prometheus:
        text += "  prometheus: {url: 'http://127.0.0.1:9090'}\n"
    (workdir / "configs/apps/shop.yaml").write_text(text)


def lint(capsys: pytest.CaptureFixture[str]) -> list[str]:
    main(["lint"])
    return capsys.readouterr().out.splitlines()


def test_a_good_analysis_lints_and_tars_plan_shows_it(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(workdir)
    assert lint(capsys)[0].startswith("OK shop:")
    assert main(["plan", "shop", "--version", "2.0.0"]) == 0
    out = capsys.readouterr().out
    assert ("analysis at fort: 30s window (analysis.window_seconds) against hosts still on the "
            "previous version; inconclusive → approval") in out, out
    assert "  5xx ratio: lb 5xx_ratio; fails above baseline × 2 + 0.01; at least 50 requests" in out
    assert '  p99: query p99{instance="{{ host.address }}"}; fails above 0.5\n' in out + "\n"


def test_lint_refuses_lb_metrics_without_counters_a_query_without_prometheus_and_unknown_stages(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(workdir, provider="command", stages="fort, frot", prometheus=False)
    out = lint(capsys)
    assert any("analysis.metrics[0].lb: traffic.provider 'command' does not report per-server "
               "counters" in line for line in out), out
    assert any("analysis.metrics[1].query: a 'query' metric needs analysis.prometheus" in line
               for line in out), out
    assert any("analysis.stages[1]: expected a stage name (fort, batch_1, batch_2, …; this plan: "
               "fort, batch_1, batch_2, batch_3), got 'frot'; did you mean 'fort'?" in line
               for line in out), out


def test_lint_wants_a_window_and_the_bake_can_be_it(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(workdir, window="null")
    assert any("analysis: expected an observation window" in line for line in lint(capsys))
    path = workdir / "configs/apps/shop.yaml"
    path.write_text(path.read_text().replace("\nservice:", "\nstrategy: {bake_seconds: 20}\nservice:"))
    assert lint(capsys)[0].startswith("OK shop:")
    assert main(["plan", "shop", "--version", "2.0.0"]) == 0
    assert "analysis at fort: 20s window (strategy.bake_seconds)" in capsys.readouterr().out


def test_a_metric_needs_one_source_and_a_rule(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(workdir)
    path = workdir / "configs/apps/shop.yaml"
    path.write_text(path.read_text().replace(", max_absolute: 0.5", ", lb: 5xx_ratio"))
    out = lint(capsys)
    assert any("analysis.metrics[1]: expected exactly one of 'lb'" in line for line in out), out


def test_an_approval_for_inconclusive_cannot_follow_a_separate_bake(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(workdir)  # inconclusive: approval, window_seconds: 30
    path = workdir / "configs/apps/shop.yaml"
    path.write_text(path.read_text().replace("\nservice:", "\nstrategy: {bake_seconds: 20}\nservice:"))
    out = lint(capsys)
    assert any("analysis.inconclusive: 'approval' with both a window of its own" in line
               for line in out), out
