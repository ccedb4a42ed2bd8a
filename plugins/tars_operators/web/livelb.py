"""The App view's live load-balancer column: read in the api-server only when that needs no SSH.

Only an HAProxy runtime API reached directly (a unix socket or TCP address, no ``lb_host``)
is read, with a short deadline so a slow or missing LB never holds the page; any other
provider (reached over SSH, or through user commands) shows the last refresh's state instead.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tars_operators.web.onhost import LiveLB

if TYPE_CHECKING:
    from tars_operators.config.spec import AppSpec

DEADLINE = 1.0  # seconds for the whole read (two runtime API commands)


def live_lb(spec: AppSpec, deadline: float = DEADLINE) -> LiveLB:
    """Every host's state in the LB now, or why it is not read live (never raises)."""
    from tars_operators.hooks.lb.haproxy import HaproxyBalancer

    traffic = spec.config.traffic
    if traffic.provider == "none":
        return LiveLB(None, "no load balancer (traffic.provider: none)")
    conf = traffic.haproxy
    if traffic.provider != "haproxy" or conf is None or conf.lb_host:
        return LiveLB(None, f"as read by the last refresh ({traffic.provider}: its API is not "
                            "reachable from the api-server without SSH)")
    started = time.monotonic()
    try:
        lb = HaproxyBalancer(spec)
        lb.api.timeout = deadline / 2  # per connection; two commands
        lb.api_deadline = 0  # one attempt: the page does not wait out an outage
        states = lb.states(spec.hosts)
    except Exception as exc:  # noqa: BLE001 - a broken LB read must not break the page
        return LiveLB(None, f"live read failed ({exc}); as read by the last refresh")
    seconds = time.monotonic() - started
    return LiveLB({name: s.describe() for name, s in states.items()},
                  f"live from {lb.where()} ({seconds * 1000:.0f} ms)")
