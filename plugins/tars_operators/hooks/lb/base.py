"""The load-balancer interface every provider implements, and the state it reports per server.

Providers take the inventory ``Host`` and map it to their own server name (``server_name``), so
callers never deal with LB-specific naming. Waiting is done here, once, by polling ``state``.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Literal

from jinja2 import TemplateError

from tars_operators.config.spec import AppSpec, Host
from tars_operators.config.templating import host_context, render
from tars_operators.errors import LoadBalancerError

Admin = Literal["ready", "drain", "maint", "unknown"]
UNKNOWN = "UNKNOWN"
# HAProxy check results that mean "the last check passed" (L7OKC: passed, conditionally).
CHECK_PASSED = frozenset({"L4OK", "L6OK", "L7OK", "L7OKC"})
_TRANSITION = re.compile(r"^(?P<base>[A-Z]+) \d+/\d+$")


@dataclass(frozen=True)
class ServerState:
    """One server as the load balancer reports it right now."""

    name: str
    status: str  # as the LB prints it: UP, DOWN, DRAIN, MAINT, "UP 1/2" (in transition), UNKNOWN
    admin: Admin  # what was asked of the LB: ready, drain or maint
    sessions: int | None  # current sessions; None when the LB cannot tell
    check_status: str = ""  # e.g. L7OK, L4CON; "" when not checked (or in MAINT)
    check_desc: str = ""  # e.g. "Layer4 connection problem: Connection refused"

    @property
    def base_status(self) -> str:
        """Status without HAProxy's transition counter ("UP 1/2" → "UP")."""
        match = _TRANSITION.match(self.status)
        return match.group("base") if match else self.status

    @property
    def settling(self) -> bool:
        """True while HAProxy has not yet confirmed the status with enough checks."""
        return _TRANSITION.match(self.status) is not None

    @property
    def known(self) -> bool:
        """False when the LB cannot report this server's state (e.g. no state command)."""
        return self.status != UNKNOWN

    @property
    def in_service(self) -> bool:
        """Receiving new requests now (an unknown state is trusted to be in service)."""
        if not self.known:
            return True
        return self.base_status == "UP" and self.admin in ("ready", "unknown")

    @property
    def confirmed_up(self) -> bool:
        """UP, ready, and the last health check (if any) passed: safe to call "back in rotation"."""
        checked = self.check_status == "" or self.check_status in CHECK_PASSED
        return self.status == "UP" and self.admin in ("ready", "unknown") and checked

    @property
    def drained(self) -> bool:
        """Out of rotation (DRAIN or MAINT) with no session left (or sessions not reported)."""
        return self.admin in ("drain", "maint") and not self.sessions

    def describe(self) -> str:
        """One line for messages: status, admin state, sessions and the last check."""
        if not self.known:
            return "state unknown (the load balancer does not report it)"
        parts = [f"admin {self.admin}"]
        if self.sessions is not None:
            parts.append(f"{self.sessions} session{'s' if self.sessions != 1 else ''}")
        if self.check_status or self.check_desc:
            parts.append(f"check {self.check_status or '-'}"
                         + (f" ({self.check_desc})" if self.check_desc else ""))
        return f"{self.status} ({', '.join(parts)})"


def render_for_host(spec: AppSpec, host: Host, template: str, field: str) -> str:
    """Render a per-host template of the traffic config; a failure names the field and host."""
    try:
        return render(template, host_context(spec, host, None))
    except TemplateError as exc:
        raise LoadBalancerError(f"{host.name}: {field}: cannot render {template!r}: {exc}") from exc


class LoadBalancer(ABC):
    """Take hosts out of rotation and back in, and report what the LB sees. No I/O in __init__."""

    provider: ClassVar[str]
    poll_interval: float = 0.1

    def __init__(self, spec: AppSpec) -> None:
        self.spec = spec

    @abstractmethod
    def server_name(self, host: Host) -> str:
        """The name (or address) this LB knows the host by."""

    @abstractmethod
    def where(self) -> str:
        """Human description of the LB endpoint, for messages (socket, file, commands)."""

    @abstractmethod
    def drain(self, host: Host) -> None:
        """Stop sending new requests to host; requests in flight continue."""

    @abstractmethod
    def disable(self, host: Host) -> None:
        """Take host out completely (HAProxy MAINT)."""

    @abstractmethod
    def enable(self, host: Host) -> None:
        """Put host back in rotation (the LB's own health checks still decide when it serves)."""

    @abstractmethod
    def state(self, host: Host) -> ServerState:
        """What the LB reports for host now."""

    def states(self, hosts: Iterable[Host]) -> dict[str, ServerState]:
        """Host name → state; providers that can read all servers at once override this."""
        return {host.name: self.state(host) for host in hosts}

    def close(self) -> None:
        """Release connections (SSH sessions); the object stays usable and reconnects lazily."""

    def __enter__(self) -> LoadBalancer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def wait_for(self, host: Host, done: Callable[[ServerState], bool],
                 timeout: float) -> tuple[ServerState, bool]:
        """Poll host's state until done(state) or timeout; returns (last state, done?)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(host)
            if not state.known or done(state):
                return state, state.known
            if time.monotonic() >= deadline:
                return state, False
            time.sleep(self.poll_interval)

    def wait_drained(self, host: Host, timeout: float) -> tuple[ServerState, bool]:
        """Wait until host is out of rotation with zero sessions; (state, drained in time?)."""
        return self.wait_for(host, lambda s: s.drained, timeout)

    def wait_up(self, host: Host, timeout: float) -> tuple[ServerState, bool]:
        """Wait until the LB reports host UP after a passing check; (state, up in time?)."""
        return self.wait_for(host, lambda s: s.confirmed_up, timeout)
