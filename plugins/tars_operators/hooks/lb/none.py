"""`provider: none`: no load balancer in front of the hosts; every traffic step is skipped."""

from __future__ import annotations

from tars_operators.config.spec import Host
from tars_operators.hooks.lb.base import UNKNOWN, LoadBalancer, ServerState


class NoBalancer(LoadBalancer):
    """Does nothing; reports every host in an unknown state."""

    provider = "none"

    def server_name(self, host: Host) -> str:
        return host.name

    def where(self) -> str:
        return "no load balancer (traffic.provider: none)"

    def _drain(self, host: Host) -> None:
        pass

    def _disable(self, host: Host) -> None:
        pass

    def _enable(self, host: Host) -> None:
        pass

    def _state(self, host: Host) -> ServerState:
        return ServerState(host.name, UNKNOWN, "unknown", None)
