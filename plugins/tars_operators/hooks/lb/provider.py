"""Pick the load balancer an app's config asks for, and name hosts the way it knows them."""

from __future__ import annotations

from tars_operators.config.spec import AppSpec, Host
from tars_operators.hooks.lb.base import LoadBalancer
from tars_operators.hooks.lb.command import CommandBalancer
from tars_operators.hooks.lb.haproxy import HaproxyBalancer
from tars_operators.hooks.lb.nginx import NginxBalancer
from tars_operators.hooks.lb.none import NoBalancer

PROVIDERS: dict[str, type[LoadBalancer]] = {
    "haproxy": HaproxyBalancer,
    "nginx": NginxBalancer,
    "command": CommandBalancer,
    "none": NoBalancer,
}


def load_balancer_for(spec: AppSpec) -> LoadBalancer:
    """The LB of ``spec.config.traffic.provider``; connects lazily (no I/O here)."""
    return PROVIDERS[spec.config.traffic.provider](spec)


def server_name(spec: AppSpec, host: Host) -> str:
    """The host's server name in the LB (e.g. `traffic.haproxy.server` rendered for the host)."""
    return load_balancer_for(spec).server_name(host)
