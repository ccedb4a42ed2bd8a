"""The load-balancer interface every provider implements, and the state it reports per server.

Providers take the inventory ``Host`` and map it to their own server name (``server_name``), so
callers never deal with LB-specific naming. Waiting is done here, once, by polling ``state``.

Outages are waited out here, once: every public call (drain, disable, enable, state, states)
runs the provider's ``_drain``… through ``call``, which retries ``LoadBalancerUnreachable``
(socket gone, refused, EAGAIN, timeout, SSH lost) with exponential backoff and jitter until
``traffic.api_deadline``; a refusal (any other ``LoadBalancerError``) is raised at once.
"""

from __future__ import annotations

import logging
import random
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Literal, TypeVar

from jinja2 import TemplateError

from tars_operators.config.spec import AppSpec, Host
from tars_operators.config.templating import host_context, render
from tars_operators.errors import LoadBalancerError, LoadBalancerUnreachable

Admin = Literal["ready", "drain", "maint", "unknown"]
UNKNOWN = "UNKNOWN"
# HAProxy check results that mean "the last check passed" (L7OKC: passed, conditionally).
CHECK_PASSED = frozenset({"L4OK", "L6OK", "L7OK", "L7OKC"})
_TRANSITION = re.compile(r"^(?P<base>[A-Z]+) \d+/\d+$")
log = logging.getLogger(__name__)
T = TypeVar("T")
# (step, host) named by errors raised inside `lb_step`; True while a `call` owns the deadline.
_STEP: ContextVar[tuple[str, str]] = ContextVar("tars_lb_step", default=("", ""))
_RETRYING: ContextVar[bool] = ContextVar("tars_lb_retrying", default=False)


@contextmanager
def lb_step(step: str, host: str) -> Iterator[None]:
    """Name the step and host that an LB outage raised inside this block reports (outermost wins)."""
    if _STEP.get()[0]:
        yield
        return
    token = _STEP.set((step, host))
    try:
        yield
    finally:
        _STEP.reset(token)


@dataclass(frozen=True)
class Backoff:
    """Exponential waits between attempts, with jitter so many workers do not retry in step."""

    first: float = 0.1
    factor: float = 2.0
    cap: float = 5.0

    def pause(self, attempt: int, left: float) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based), at most ``left``."""
        full = min(self.cap, self.first * self.factor ** (attempt - 1))
        return max(0.0, min(left, random.uniform(full / 2, full)))


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


@dataclass(frozen=True)
class ServerCounters:
    """One server's traffic as the LB counts it: cumulative counts since it started, and its
    moving-average times (HAProxy: over the last 1024 responses)."""

    server: str
    responses: int  # HTTP responses sent (every status class)
    r4xx: int
    r5xx: int
    errors: int  # failed connections and responses to the server (no HTTP status)
    response_ms: float
    total_ms: float


def render_for_host(spec: AppSpec, host: Host, template: str, field: str) -> str:
    """Render a per-host template of the traffic config; a failure names the field and host."""
    done = spec.rendered.get((template, host.name))
    if done is not None:
        return done
    try:
        text = render(template, host_context(spec, host, None))
    except TemplateError as exc:
        raise LoadBalancerError(f"{host.name}: {field}: cannot render {template!r}: {exc}") from exc
    spec.rendered[(template, host.name)] = text
    return text


class LoadBalancer(ABC):
    """Take hosts out of rotation and back in, and report what the LB sees. No I/O in __init__.

    Providers implement ``_drain``, ``_disable``, ``_enable``, ``_state`` (and ``_states`` when
    they can read every server at once) and raise ``LoadBalancerUnreachable`` for transport
    failures; the public methods add the outage retry.
    """

    provider: ClassVar[str]
    poll_interval: float = 0.1
    backoff: Backoff = Backoff()
    # Monotonic end of the running step's own timeout (steps.pull_out.timeout …): retries stop there.
    step_deadline: float | None = None

    def __init__(self, spec: AppSpec) -> None:
        self.spec = spec
        self.api_deadline = spec.config.traffic.api_deadline

    # -- outages, waited out in one place ---------------------------------------------------------
    def call(self, what: str, host: Host | None, fn: Callable[[], T]) -> T:
        """fn(), retried while the LB is unreachable until ``api_deadline``; refusals raise at once."""
        if _RETRYING.get():
            return fn()  # an outer call already owns the deadline
        token = _RETRYING.set(True)
        try:
            return self._retry(what, host, fn)
        finally:
            _RETRYING.reset(token)

    def _retry(self, what: str, host: Host | None, fn: Callable[[], T]) -> T:
        started = time.monotonic()
        deadline, attempt = started + self.api_deadline, 0
        if self.step_deadline is not None:
            deadline = min(deadline, self.step_deadline)
        while True:
            attempt += 1
            try:
                return fn()
            except LoadBalancerUnreachable as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._gave_up(what, host, attempt, started, exc) from exc
                pause = self.backoff.pause(attempt, left)
                who, step = self._who(host)
                log.warning("%s: %s: load balancer unreachable while trying to %s (%s); attempt "
                            "%d failed, retrying in %.2fs (%.1fs left of traffic.api_deadline "
                            "%gs)", who, step, what, exc, attempt, pause, left, self.api_deadline)
                time.sleep(pause)

    def _who(self, host: Host | None) -> tuple[str, str]:
        step, step_host = _STEP.get()
        return (host.name if host is not None else step_host or self.spec.name), step or "traffic"

    def _gave_up(self, what: str, host: Host | None, attempts: int, started: float,
                 exc: LoadBalancerUnreachable) -> LoadBalancerUnreachable:
        who, step = self._who(host)
        seconds = time.monotonic() - started
        return LoadBalancerUnreachable(
            f"{who}: {step}: {self.where()} unreachable for {seconds:.1f}s ({attempts} attempt"
            f"{'s' if attempts != 1 else ''}, traffic.api_deadline {self.api_deadline:g}s) "
            f"while trying to {what}: {exc}. The load balancer state of {who} is unknown: "
            f"check it once the load balancer is back."
        )

    # -- the interface ----------------------------------------------------------------------------
    def drain(self, host: Host) -> None:
        """Stop sending new requests to host; requests in flight continue."""
        self.call(f"drain {host.name}", host, lambda: self._drain(host))

    def disable(self, host: Host) -> None:
        """Take host out completely (HAProxy MAINT)."""
        self.call(f"disable {host.name}", host, lambda: self._disable(host))

    def enable(self, host: Host) -> None:
        """Put host back in rotation (the LB's own health checks still decide when it serves)."""
        self.call(f"enable {host.name}", host, lambda: self._enable(host))

    def state(self, host: Host) -> ServerState:
        """What the LB reports for host now."""
        return self.call(f"read the state of {host.name}", host, lambda: self._state(host))

    def states(self, hosts: Iterable[Host]) -> dict[str, ServerState]:
        """Host name → state."""
        hosts = list(hosts)
        return self.call("read the state of the servers", None, lambda: self._states(hosts))

    @abstractmethod
    def server_name(self, host: Host) -> str:
        """The name (or address) this LB knows the host by."""

    @abstractmethod
    def where(self) -> str:
        """Human description of the LB endpoint, for messages (socket, file, commands)."""

    @abstractmethod
    def _drain(self, host: Host) -> None:
        """One attempt at `drain`."""

    @abstractmethod
    def _disable(self, host: Host) -> None:
        """One attempt at `disable`."""

    @abstractmethod
    def _enable(self, host: Host) -> None:
        """One attempt at `enable`."""

    @abstractmethod
    def _state(self, host: Host) -> ServerState:
        """One attempt at `state`."""

    def _states(self, hosts: list[Host]) -> dict[str, ServerState]:
        """One attempt at `states`; providers that can read all servers at once override this."""
        return {host.name: self._state(host) for host in hosts}

    # Canary analysis reads per-server counters (``counters``); providers that have none
    # leave this False and lint refuses an ``analysis`` metric with ``lb:`` for them.
    offers_counters: ClassVar[bool] = False

    def counters(self, hosts: Iterable[Host]) -> dict[str, ServerCounters]:
        """Host name → its server's counters now."""
        hosts = list(hosts)
        return self.call("read the servers' counters", None, lambda: self._counters(hosts))

    def _counters(self, hosts: list[Host]) -> dict[str, ServerCounters]:
        raise LoadBalancerError(f"traffic.provider {self.provider!r} does not report per-server "
                                f"counters: use 'query' metrics in analysis (Prometheus)")

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
