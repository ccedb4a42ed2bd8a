"""Traffic steps: pull a host out of rotation and back in, verified through the load balancer.

pull_out raises when the host is not safely out (the caller must then NOT restart it);
pull_in raises when the LB does not report the host UP after its own health check in time.

Capacity floor (`traffic.min_in_service`) and concurrency: hosts of one batch are pulled out
by separate workers at the same time, so no single check sees the others' intent. The planner
guarantees that a batch never exceeds what the floor allows; at run time every pull_out
(1) counts what the LB reports as out (DOWN/MAINT/DRAIN, including batch-mates already drained)
plus this host, refusing if that breaks the floor, then (2) drains and counts again: if the
floor is now broken (a concurrent drain or a host that failed meanwhile), it puts this host
back and refuses. Two workers racing for the last slot may both back off: that fails safe.

Every LB call inside a step waits out an unreachable LB API up to `traffic.api_deadline`
(hooks/lb/base.py); after that the step raises `LoadBalancerUnreachable` naming host and step.
`steps.pull_out` / `steps.pull_in` bound each step: its `timeout` ends the drain (or ready) wait
and the LB retries early, and a failed attempt is tried again `retries` times (steps/policy.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import (
    CapacityError,
    InvalidValue,
    LoadBalancerError,
    LoadBalancerUnreachable,
)
from tars_operators.hooks.lb.base import LoadBalancer, ServerState, lb_step
from tars_operators.plan.capacity import required_in_service
from tars_operators.results import StepResult
from tars_operators.steps.policy import Deadline, PolicyStep, with_retries

Body = Callable[[LoadBalancer, AppSpec, Host, float, Deadline], StepResult]


def _host(spec: AppSpec, name: str) -> Host:
    try:
        return spec.host(name)
    except KeyError:
        known = ", ".join(h.name for h in spec.hosts)
        raise InvalidValue(f"unknown host {name!r} for app {spec.name}; hosts: {known}") from None


def _capacity_error(lb: LoadBalancer, spec: AppSpec, names: Sequence[str], left: int,
                    out_now: dict[str, ServerState]) -> CapacityError:
    total, floor = len(spec.hosts), spec.config.traffic.min_in_service
    need = required_in_service(floor, total)
    already = ", ".join(f"{n} ({s.status})" for n, s in sorted(out_now.items())) or "none"
    return CapacityError(
        f"{spec.name}: taking out {', '.join(names) or 'no host'} would leave {left} of {total} "
        f"hosts in service; traffic.min_in_service is {floor!r} ({need} hosts). Already out per "
        f"{lb.where()}: {already}. Bring those back into rotation or release fewer hosts at once."
    )


def _out_now(lb: LoadBalancer, spec: AppSpec) -> dict[str, ServerState]:
    return {n: s for n, s in lb.states(spec.hosts).items() if not s.in_service}


def check_capacity(lb: LoadBalancer, spec: AppSpec, names: Iterable[str]) -> None:
    """Raise CapacityError if taking `names` out breaks `traffic.min_in_service`.

    Hosts the LB reports DOWN/MAINT/DRAIN count as out already; names already out change
    nothing and are always allowed.
    """
    if lb.provider == "none":
        return
    names = [_host(spec, n).name for n in names]
    with lb_step("capacity check", ", ".join(names)):
        out_now = _out_now(lb, spec)
    taking = [n for n in names if n not in out_now]
    left = len(spec.hosts) - len(out_now) - len(taking)
    need = required_in_service(spec.config.traffic.min_in_service, len(spec.hosts))
    if taking and left < need:
        raise _capacity_error(lb, spec, names, left, out_now)


def _result(host: Host, step: str, started: float, state: ServerState | None, detail: str,
            state_name: str = "ok", **data: object) -> StepResult:
    info: dict[str, object] = dict(data)
    if state is not None:
        info.update(server=state.name, status=state.status, admin=state.admin,
                    sessions=state.sessions, check_status=state.check_status)
    return StepResult(host=host.name, step=step, state=state_name,  # type: ignore[arg-type]
                      seconds=round(time.monotonic() - started, 3), detail=detail, data=info)


def _skipped(host: Host, step: str, started: float) -> StepResult:
    return _result(host, step, started, None, "no load balancer (traffic.provider: none)", "skipped")


def _drain_checked(lb: LoadBalancer, spec: AppSpec, host: Host, before: ServerState) -> None:
    """Drain, then re-count; if this drain broke the floor, put the host back and refuse."""
    lb.drain(host)
    if not before.in_service or not before.known:
        return
    out_now = _out_now(lb, spec)
    left = len(spec.hosts) - len(out_now)
    if left < required_in_service(spec.config.traffic.min_in_service, len(spec.hosts)):
        lb.enable(host)
        raise _capacity_error(lb, spec, [host.name], left, out_now)


def pull_out(lb: LoadBalancer, spec: AppSpec, host: Host) -> StepResult:
    """Drain host, wait for zero sessions (MAINT after `drain_timeout`), verified through the LB."""
    if lb.provider == "none":
        return _skipped(host, "pull_out", time.monotonic())
    return with_retries(spec, host.name, "pull_out",
                        lambda _: _bounded(lb, spec, host, "pull_out", _pull_out))


def _bounded(lb: LoadBalancer, spec: AppSpec, host: Host, step: PolicyStep, body: Body) -> StepResult:
    """One attempt of a traffic step within its ``steps.<step>.timeout``: LB retries end there."""
    started, deadline = time.monotonic(), Deadline(spec, step)
    outer, lb.step_deadline = lb.step_deadline, deadline.at
    try:
        with lb_step(step, host.name):
            return body(lb, spec, host, started, deadline)
    except LoadBalancerUnreachable as exc:
        if deadline.left() == 0 and len(exc.args) == 1:
            exc.args = (f"{exc.args[0]} (the step's {deadline.setting()} is up)",)
        raise
    finally:
        lb.step_deadline = outer


def _pull_out(lb: LoadBalancer, spec: AppSpec, host: Host, started: float,
              deadline: Deadline) -> StepResult:
    check_capacity(lb, spec, [host.name])
    before = lb.state(host)
    if before.known and before.admin == "maint":
        return _result(host, "pull_out", started, before, f"already out: {before.describe()}",
                       "unchanged")
    _drain_checked(lb, spec, host, before)
    drain_timeout = spec.config.traffic.drain_timeout
    timeout = deadline.cap(drain_timeout)
    cut = deadline.cuts(drain_timeout)
    shown = deadline.timeout if cut and deadline.timeout is not None else drain_timeout
    state, drained = lb.wait_drained(host, timeout)
    if not state.known:
        return _result(host, "pull_out", started, state,
                       f"drained via {lb.where()}; waited "
                       f"{deadline.setting() if cut else f'traffic.drain_timeout ({shown:g}s)'}; "
                       f"unverified: the LB does not report state", verified=False)
    forced = not drained
    if forced:
        lb.disable(host)
        state = lb.state(host)
    if state.admin not in ("drain", "maint"):
        raise LoadBalancerError(
            f"{host.name}: pull_out: {lb.where()} still has {state.name} in rotation after "
            f"draining: {state.describe()}; not restarting it"
        )
    left = "requests possibly" if state.sessions is None else f"{state.sessions} sessions"
    detail = (f"{'steps.pull_out.timeout' if cut else 'drain timeout'} {shown:g}s with {left} "
              "left; forced MAINT"
              if forced else f"out of rotation: {state.describe()}")
    return _result(host, "pull_out", started, state, detail, verified=True, forced_maint=forced)


def pull_in(lb: LoadBalancer, spec: AppSpec, host: Host) -> StepResult:
    """Put host back and wait until the LB itself reports it UP (health check passed)."""
    if lb.provider == "none":
        return _skipped(host, "pull_in", time.monotonic())
    return with_retries(spec, host.name, "pull_in",
                        lambda _: _bounded(lb, spec, host, "pull_in", _pull_in))


def _pull_in(lb: LoadBalancer, spec: AppSpec, host: Host, started: float,
             deadline: Deadline) -> StepResult:
    lb.enable(host)
    ready_timeout = spec.config.traffic.ready_timeout
    timeout = deadline.cap(ready_timeout)
    cut = deadline.cuts(ready_timeout)
    bound = "steps.pull_in.timeout" if cut else "traffic.ready_timeout"
    shown = deadline.timeout if cut and deadline.timeout is not None else ready_timeout
    state, up = lb.wait_up(host, timeout)
    if not state.known:
        return _result(host, "pull_in", started, state,
                       f"enabled via {lb.where()}; unverified: the LB does not report state",
                       verified=False)
    if not up:
        raise LoadBalancerError(
            f"{host.name}: pull_in: {lb.where()} does not report {state.name} UP after "
            f"{shown:g}s ({bound}): {state.describe()}. It is set ready, so the "
            f"LB sends traffic as soon as its own health checks pass."
        )
    return _result(host, "pull_in", started, state, f"in rotation: {state.describe()}",
                   verified=True)


@dataclass(frozen=True)
class RotationReport:
    """Hosts the LB does not report in rotation after a release, with what it says about them."""

    checked: tuple[str, ...]
    not_in_rotation: tuple[tuple[str, str], ...]  # (host, LB status line or error)
    provider: str = ""
    error: str = ""  # the LB could not be read at all

    @property
    def ok(self) -> bool:
        return not self.not_in_rotation and not self.error

    def summary(self) -> str:
        """One line when all is well, else one line per host that is not back."""
        if self.provider == "none":
            return "rotation not checked (traffic.provider: none)"
        if self.error:
            return f"ROTATION UNKNOWN for {', '.join(self.checked)}: {self.error}"
        if not self.not_in_rotation:
            return f"all {len(self.checked)} hosts in rotation"
        lines = [f"{len(self.not_in_rotation)} of {len(self.checked)} hosts NOT in rotation:"]
        return "\n".join(lines + [f"  {name}: {why}" for name, why in self.not_in_rotation])


def rotation_report(lb: LoadBalancer, spec: AppSpec, hosts: Sequence[Host]) -> RotationReport:
    """Which of hosts the LB does not report UP (for the release's final summary). Never raises."""
    names = tuple(h.name for h in hosts)
    if lb.provider == "none":
        return RotationReport(names, (), provider="none")
    try:
        with lb_step("rotation check", ", ".join(names)):
            states = lb.states(hosts)
    except LoadBalancerUnreachable as exc:  # already waited api_deadline: do not wait per host
        return RotationReport(names, (), lb.provider, error=str(exc))
    except LoadBalancerError as exc:
        return _rotation_one_by_one(lb, hosts, exc)
    bad = tuple((n, s.describe()) for n, s in states.items() if s.known and not s.confirmed_up)
    return RotationReport(names, bad, lb.provider)


def _rotation_one_by_one(lb: LoadBalancer, hosts: Sequence[Host],
                         exc: LoadBalancerError) -> RotationReport:
    """After a failed bulk read: name the hosts the LB does not know, or report it unreadable."""
    names = tuple(h.name for h in hosts)
    bad: list[tuple[str, str]] = []
    for host in hosts:
        try:
            state = lb.state(host)
        except LoadBalancerError as one:
            bad.append((host.name, str(one)))
            continue
        if state.known and not state.confirmed_up:
            bad.append((host.name, state.describe()))
    if len(bad) == len(hosts) and len({why for _, why in bad}) == 1:
        return RotationReport(names, (), lb.provider, error=str(exc))
    return RotationReport(names, tuple(bad), lb.provider)
