"""The steps of a restore (``hostflow.restore_host``): target re-activated or restarted,
healthy, the undone release marked failed, back in rotation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tars_operators.config.spec import AppSpec, Host
from tars_operators.release.hostflow import wait_capacity
from tars_operators.results import StepResult


@dataclass
class Restore:
    """The steps of one restore, tracking whether the host is out of rotation right now."""

    spec: AppSpec
    host: Host
    session: Any
    lb: Any
    run_id: str
    log: Any
    steps: list[StepResult] = field(default_factory=list)
    out: bool = False
    changed: bool = False
    current: str | None = None

    def add(self, result: StepResult) -> None:
        self.steps.append(result)
        self.log.info("%s %s: %s %s", self.host.name, result.step, result.state, result.detail)

    def run(self, state: Any, version: str, *, undo: str | None) -> None:
        from tars_operators.errors import HealthCheckFailed
        from tars_operators.steps.activate import service_running

        self.current = state.current
        if state.current != version:
            self._activate(version, restart=False)
        elif not service_running(self.session, self.spec, self.host, version):
            self.log.info("%s: %s is current but its service is not running", self.host.name, version)
            self._activate(version, restart=True)
        else:
            try:
                self.add(self._health(version))
            except HealthCheckFailed as exc:
                self.log.warning("%s: %s is current but unhealthy (%s); restarting it",
                                 self.host.name, version, exc)
                self._activate(version, restart=True)
        if undo is not None and undo != version:
            self._mark_failed(state, undo)
        self._pull_in()

    def _activate(self, version: str, *, restart: bool) -> None:
        from tars_operators.steps.activate import activate_release
        from tars_operators.steps.traffic import pull_out

        wait_capacity(self.lb, self.spec, self.host, self.log)
        self.add(pull_out(self.lb, self.spec, self.host))
        self.out, self.changed = True, True
        self.add(activate_release(self.session, self.spec, self.host, version, self.run_id,
                                  restore=True, restart=restart))
        self.current = version
        self.add(self._health(version))

    def _health(self, version: str) -> StepResult:
        from tars_operators.steps.checks import run_checks

        return run_checks(self.session, self.spec, self.host, version, kind="health")

    def _mark_failed(self, state: Any, version: str) -> None:
        from tars_operators.steps.activate import mark_release

        meta = state.release(version)
        if meta is not None and meta.status != "failed" and not meta.derived:
            self.add(mark_release(self.session, self.spec, self.host, version, "failed"))

    def _pull_in(self) -> None:
        from tars_operators.steps.traffic import pull_in

        self.add(pull_in(self.lb, self.spec, self.host))
        self.out = False


def rotation_word(lb: Any, host: Host) -> str:
    """What the load balancer says about ``host``, for messages (never raises)."""
    if getattr(lb, "provider", "none") == "none":
        return "no load balancer"
    try:
        state = lb.state(host)
    except Exception as exc:  # noqa: BLE001 — a message must not hide the original error
        return f"rotation unknown: {exc}"
    return ("in rotation" if state.in_service else "OUT OF ROTATION") + f", LB: {state.describe()}"


def next_hint(spec: AppSpec, host: Host) -> str:
    return (f"Next: fix the cause, then `tars rollback {spec.name} --hosts {host.name} --reason …` "
            f"(tars_rollback__{spec.name} with hosts=[{host.name}]; its `version` param picks a "
            "good release on the host), or deploy a release to it.")
