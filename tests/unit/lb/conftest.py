"""Spec builders and an in-memory load balancer for the traffic unit tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tars_operators.config.schema import AppConfig
from tars_operators.config.spec import AppSpec, Host
from tars_operators.hooks.lb.base import LoadBalancer, ServerState

MakeSpec = Callable[..., AppSpec]


def build_spec(traffic: dict[str, Any], hosts: int = 4, **host_vars: Any) -> AppSpec:
    """An AppSpec with hosts host01… at 127.0.0.1x and the given `traffic` section."""
    config = AppConfig.model_validate({
        "app": {"name": "demo", "owner": "team"},
        "artifact": {"url": "http://a/demo-{{ version }}.tar.gz", "checksum": {"url": "{{ url }}.sha256"}},
        "hosts": {"vars": {"app_port": 18080}},
        "service": {"start": "start", "stop": "stop"},
        "traffic": traffic,
    })
    fleet = tuple(
        Host(name=f"host{i:02d}", address=f"127.0.0.{10 + i}", vars=dict(host_vars))
        for i in range(1, hosts + 1)
    )
    return AppSpec(config=config, hosts=fleet, source=Path("/cfg/demo.yaml"))


@pytest.fixture
def make_spec() -> MakeSpec:
    return build_spec


class MemoryLB(LoadBalancer):
    """A load balancer held in a dict: for capacity and step logic edge cases only."""

    provider = "memory"

    def __init__(self, spec: AppSpec, states: dict[str, str] | None = None) -> None:
        super().__init__(spec)
        self.status = {h.name: "UP" for h in spec.hosts} | (states or {})
        self.sessions = {h.name: 0 for h in spec.hosts}
        self.calls: list[tuple[str, str]] = []
        self.poll_interval = 0.01

    def server_name(self, host: Host) -> str:
        return host.name

    def where(self) -> str:
        return "memory"

    def _set(self, op: str, host: Host, status: str) -> None:
        self.calls.append((op, host.name))
        self.status[host.name] = status

    def _drain(self, host: Host) -> None:
        self._set("drain", host, "DRAIN")

    def _disable(self, host: Host) -> None:
        self._set("disable", host, "MAINT")

    def _enable(self, host: Host) -> None:
        self._set("enable", host, "UP")

    def _state(self, host: Host) -> ServerState:
        status = self.status[host.name]
        admin = {"DRAIN": "drain", "MAINT": "maint"}.get(status, "ready")
        check = "L7OK" if status in ("UP", "DRAIN") else "L4CON"
        return ServerState(host.name, status, admin, self.sessions[host.name], check)  # type: ignore[arg-type]


@pytest.fixture
def memory_lb() -> Callable[..., MemoryLB]:
    return MemoryLB
