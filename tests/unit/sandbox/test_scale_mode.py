"""Scale mode's pure parts: host addresses, HAProxy check pacing, the multiplexer's builds and metrics."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from sandbox.haproxy import check_options
from sandbox.layout import SCALE_MAX_HOSTS, Settings

pytestmark = pytest.mark.unit
MUX = Path(__file__).resolve().parents[3] / "sandbox" / "demo_app" / "mux.py"
_spec = importlib.util.spec_from_file_location("sandbox_mux_under_test", MUX)
assert _spec and _spec.loader
mux = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = mux  # dataclasses look their module up while the class is built
_spec.loader.exec_module(mux)


def settings(scale: bool, first: int) -> Settings:
    return Settings(hosts=10, first_address=first, ssh_port=2222, app_port=18080, frontend_port=1,
                    artifact_port=2, user="u", scale=scale)


@pytest.mark.parametrize(("scale", "first", "index", "address"), [
    (False, 11, 0, "127.0.0.11"),
    (False, 51, 9, "127.0.0.60"),
    (True, 61, 0, "127.61.0.1"),
    (True, 61, 253, "127.61.0.254"),  # .255 is skipped …
    (True, 61, 254, "127.61.1.1"),    # … and so is .0
    (True, 63, 1999, "127.63.7.222"),
    (True, 1, SCALE_MAX_HOSTS - 1, "127.1.255.254"),
])
def test_host_addresses(scale: bool, first: int, index: int, address: str) -> None:
    assert settings(scale, first).address(index) == address


def test_older_sandbox_json_reads_as_small_mode() -> None:
    old = {"hosts": 3, "first_address": 11, "ssh_port": 2222, "app_port": 18080,
           "frontend_port": 1, "artifact_port": 2, "user": "u"}
    assert Settings(**old).scale is False and Settings(**old).address(2) == "127.0.0.13"


@pytest.mark.parametrize(("hosts", "scale", "options"), [
    (10, False, "check inter 300ms fall 2 rise 2"),
    (200, True, "check inter 300ms fastinter 300ms downinter 500ms fall 2 rise 2"),
    (2000, True, "check inter 2000ms fastinter 300ms downinter 500ms fall 2 rise 2"),
    (50_000, True, "check inter 10000ms fastinter 300ms downinter 500ms fall 2 rise 2"),
])
def test_health_checks_are_paced_by_fleet_size(hosts: int, scale: bool, options: str) -> None:
    assert check_options(hosts, scale) == options


def test_build_comes_from_the_release_build_file_else_app_py(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text('BUILD = "slow"\n')
    assert mux.read_build(tmp_path) == mux.Build("slow")
    (tmp_path / "BUILD").write_text(json.dumps({"build": "errors", "error_percent": 10, "latency_ms": 50}))
    assert mux.read_build(tmp_path) == mux.Build("errors", 10.0, 50.0)
    (tmp_path / "BUILD").write_text("broken\n")
    assert mux.read_build(tmp_path) == mux.Build("broken")


def test_errors_build_fails_every_nth_request(tmp_path: Path) -> None:
    release = mux.Release(tmp_path, "2.0.0-errors", mux.Build("errors", 5.0), "h", "127.0.0.1", 1)
    app = mux.HostApp(release)
    fails = [app.next_request_fails() for _ in range(100)]
    assert sum(fails) == 5 and fails[19] and not fails[18]
    normal = mux.HostApp(mux.Release(tmp_path, "1.0.0", mux.Build(), "h", "127.0.0.1", 1))
    assert not any(normal.next_request_fails() for _ in range(100))


def test_metrics_use_the_app_names_per_path_and_status() -> None:
    metrics = mux.Metrics()
    metrics.observe("/", 200, 0.003)
    metrics.observe("/", 500, 0.3)
    metrics.observe("/nope", 404, 0.001)
    text = metrics.exposition()
    assert 'demo_http_requests_total{code="200",path="/"} 1.0' in text
    assert 'demo_http_requests_total{code="500",path="/"} 1.0' in text
    assert 'demo_http_requests_total{code="404",path="other"} 1.0' in text
    assert 'demo_http_request_duration_seconds_bucket{le="0.005",path="/"} 1.0' in text
    assert 'demo_http_request_duration_seconds_bucket{le="+Inf",path="/"} 2.0' in text
    assert 'demo_http_request_duration_seconds_count{path="/"} 2.0' in text
