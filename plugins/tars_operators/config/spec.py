"""The resolved application: config + concrete hosts, and the per-host template context."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from tars_operators.config.schema import AppConfig

if TYPE_CHECKING:
    from tars_operators.plan.ramp import ReleasePlan


@dataclass(frozen=True)
class Host:
    """One target host with its variables merged: inventory vars < group vars < host vars."""

    name: str
    address: str
    ssh_port: int = 22
    group: str | None = None
    vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    queue: str | None = None  # airflow.queue (host < group); None: the executor's default


@dataclass(frozen=True)
class AppSpec:
    """A validated app config with its hosts resolved (inventory + inline list).

    ``hosts`` is the one list of hosts: the loader moves ``config.hosts.list`` into it (merged
    with the inventory and the group/host vars), leaving that field empty.
    """

    config: AppConfig
    hosts: tuple[Host, ...]
    source: Path  # the YAML file
    global_vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def name(self) -> str:
        return self.config.app.name

    @cached_property
    def default_plan(self) -> ReleasePlan:
        """The plan of a release without overrides (DAG shape, doc, capacity): made once."""
        from tars_operators.plan.ramp import plan_release

        return plan_release(self)

    @property
    def dag_id(self) -> str:
        return f"tars_deploy__{self.config.app.name}"

    @property
    def config_dir(self) -> Path:
        return self.source.parent

    @cached_property
    def queues(self) -> tuple[str | None, ...]:
        """The distinct queues of the app's hosts (the default queue first, then by name):
        one mapped host task per queue."""
        found = {h.queue for h in self.hosts}
        return ((None,) if None in found or not found else ()) + tuple(
            sorted(q for q in found if q is not None))

    @cached_property
    def queue_of(self) -> Mapping[str, str | None]:
        """Each host's queue, by host name."""
        return MappingProxyType({h.name: h.queue for h in self.hosts})

    @cached_property
    def _by_name(self) -> Mapping[str, Host]:
        return MappingProxyType({h.name: h for h in self.hosts})

    def host(self, name: str) -> Host:
        return self._by_name[name]

    @cached_property
    def rendered(self) -> dict[tuple[str, str], str]:
        """(template, host name) → that template rendered for the host, made once per process:
        a load balancer names every server of the app on each capacity check."""
        return {}


def template_context(spec: AppSpec, host: Host | None, version: str | None) -> dict[str, Any]:
    """The variables every per-host template sees (deploy root, URLs, commands, config files).

    ``vars`` is global vars < app vars < group vars < host vars (host wins).
    """
    app = spec.config.app
    merged: dict[str, Any] = {**spec.global_vars, **spec.config.hosts.vars}
    if host is not None:
        merged.update(host.vars)
    ctx: dict[str, Any] = {
        "app": {"name": app.name, "owner": app.owner},
        "version": version,
        "vars": merged,
        "host": (
            {"name": host.name, "address": host.address, "ssh_port": host.ssh_port,
             "group": host.group}
            if host is not None
            else None
        ),
    }
    return ctx
