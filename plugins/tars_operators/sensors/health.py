"""``HealthCheckSensor``: wait for a host's health checks, deferred to the triggerer by default.

The stage after activate in a DAG of your own (docs/operators.md): the same checks and trigger
as Tars's host chain (``steps/checks.run_checks``, ``triggers/health.HealthCheckTrigger``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from tars_operators.errors import HealthCheckFailed, InvalidValue
from tars_operators.operators.steps import SpecLoader, find_host, load_spec
from tars_operators.results import StepResult

if TYPE_CHECKING:
    from airflow.sdk import Context


class HealthCheckSensor(BaseSensorOperator):
    """Health (or smoke) checks of one host; ``deferrable=True`` holds no worker slot while waiting."""

    template_fields = ("version", "host_name")

    def __init__(self, *, version: str, host_name: str, kind: str = "health", deferrable: bool = True,
                 spec_loader: SpecLoader | None = None, spec_path: str | None = None,
                 defaults_path: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if spec_loader is None and not spec_path:
            raise InvalidValue(f"{self.task_id}: give spec_loader or spec_path")
        self.version, self.host_name, self.kind, self.deferrable = version, host_name, kind, deferrable
        self.spec_loader, self.spec_path, self.defaults_path = spec_loader, spec_path, defaults_path

    def execute(self, context: Context) -> Any:
        spec = load_spec(self.spec_loader, self.spec_path, self.defaults_path)
        host = find_host(spec, self.host_name)
        checks = spec.config.health if self.kind == "health" else spec.config.smoke
        if not self.deferrable or self.kind != "health" or not checks:
            from tars_operators.hooks.ssh import open_session
            from tars_operators.steps.checks import run_checks

            with open_session(spec, host) as session:
                return run_checks(session, spec, host, self.version, checks, kind=self.kind).as_dict()  # type: ignore[arg-type]
        from tars_operators.triggers.health import HealthCheckTrigger

        trigger = HealthCheckTrigger.for_host(spec, host, self.version, checks)
        budget = sum(c.timeout + c.interval for c in checks) + 60.0
        self.defer(trigger=trigger, method_name="execute_complete", timeout=timedelta(seconds=budget))

    def execute_complete(self, context: Context,
                         event: dict[str, Any] | None = None) -> dict[str, Any]:
        event = event or {}
        if event.get("status") != "passed":
            raise HealthCheckFailed(self.host_name, self.kind, str(event.get("message", event)))
        return StepResult(self.host_name, self.kind, "ok", self.version, float(event.get("seconds", 0.0)),
                          str(event.get("message", "")), {"checks": event.get("checks", [])}).as_dict()
