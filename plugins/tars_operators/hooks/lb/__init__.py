"""Load balancers: take hosts out of rotation and back in, verified through the LB's own API.

    lb = load_balancer_for(spec)      # haproxy | nginx | command | none, per traffic.provider
    lb.drain(host); lb.wait_drained(host, timeout); lb.enable(host); lb.wait_up(host, timeout)
"""

from __future__ import annotations

from tars_operators.hooks.lb.base import LoadBalancer, ServerState
from tars_operators.hooks.lb.provider import load_balancer_for, server_name

__all__ = ["LoadBalancer", "ServerState", "load_balancer_for", "server_name"]
