"""The App view reads the LB live only without SSH, and never waits long for it."""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tars_operators.config.loader import load_app
from tests.silent import silent
from tars_operators.web.livelb import DEADLINE, live_lb

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]


def spec_with(tmp_path: Path, sock: str, **traffic: Any) -> Any:
    data = yaml.safe_load((REPO / "configs/apps/demo.yaml").read_text())
    data["hosts"] = {"list": [{"name": f"h{i}", "address": f"127.0.0.1{i}",
                               "vars": {"deploy_root": f"/srv/h{i}", "app_port": 8080}}
                              for i in range(1, 5)],
                     "vars": {"artifact_base": "http://127.0.0.1:1", "haproxy_socket": sock}}
    (tmp_path / "app.json.j2").write_text((REPO / "configs/templates/demo/app.json.j2").read_text())
    data["install"]["templates"][0]["src"] = "app.json.j2"
    data["traffic"].update(traffic)
    if data["traffic"]["provider"] != "haproxy":
        data.pop("analysis", None)  # its lb metrics need HAProxy's counters (lint says so)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_app(path)


@pytest.fixture
def silent_lb() -> Iterator[str]:
    """A unix socket that accepts and never answers: an LB that hangs (real HAProxy will not
    do this on demand)."""
    where = Path(tempfile.mkdtemp(prefix="tars-lb-", dir="/tmp"))
    path = str(where / "s.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    try:
        with silent(server):
            yield path
    finally:
        Path(path).unlink(missing_ok=True)
        where.rmdir()


def test_a_hanging_lb_costs_the_page_at_most_the_deadline(tmp_path: Path, silent_lb: str) -> None:
    spec = spec_with(tmp_path, silent_lb)
    started = time.monotonic()
    live = live_lb(spec)
    assert time.monotonic() - started < DEADLINE + 0.3
    assert live.states is None
    assert live.why.startswith("live read failed") and "as read by the last refresh" in live.why


def test_a_missing_socket_is_said_at_once(tmp_path: Path) -> None:
    live = live_lb(spec_with(tmp_path, "/nonexistent/haproxy.sock"))
    assert live.states is None and "/nonexistent/haproxy.sock" in live.why


def test_an_lb_reached_over_ssh_is_not_read_by_the_api_server(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, "/run/haproxy.sock",
                     haproxy={"socket": "/run/haproxy.sock", "backend": "demo", "lb_host": "h1"})
    live = live_lb(spec)
    assert live.states is None and "without SSH" in live.why


def test_no_load_balancer(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, "/x.sock", provider="none", haproxy=None)
    assert live_lb(spec).why == "no load balancer (traffic.provider: none)"
