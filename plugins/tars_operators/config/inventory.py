"""Hosts: the inventory file (sandbox/ansible-like YAML) plus the config's inline list.

Variables merge as inventory ``vars`` < ``hosts.vars`` < group vars < host vars into
``Host.vars``. ``hosts.inventory`` alone may use ``${ENV_VAR:-default}`` so tests can point
the same config at their own sandbox.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from tars_operators.config.files import read_yaml
from tars_operators.config.problems import Problem, describe, dotted
from tars_operators.config.schema import Group, HostEntry, Hosts, Model
from tars_operators.config.spec import Host
from tars_operators.config.validation import problems_from
from tars_operators.config.yamlio import syntax_error_position, syntax_error_text

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
INVENTORY_KEY = ("hosts", "inventory")
SANDBOX_HINT = "for the local sandbox, run: python -m sandbox up"


class Inventory(Model):
    """The inventory file: global vars, groups with vars, hosts."""

    vars: dict[str, Any] = {}
    groups: dict[str, Group] = {}
    hosts: tuple[HostEntry, ...] = ()


@dataclass(frozen=True)
class ResolvedHosts:
    """The hosts of one app, the inventory's global vars, and what went wrong."""

    hosts: tuple[Host, ...] = ()
    global_vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    problems: tuple[Problem, ...] = ()
    inventory_file: Path | None = None


def expand_env(value: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` (default when unset or empty)."""
    env = os.environ if environ is None else environ

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = env.get(name)
        if found:
            return found
        if default is None:
            raise ValueError(f"environment variable {name} is not set and has no default")
        return default

    return ENV_REF.sub(sub, value)


def load_inventory(path: Path) -> tuple[Inventory | None, list[Problem]]:
    """Read and validate an inventory file (cached by path and mtime)."""
    parsed = read_yaml(path)
    if parsed.error is not None:
        pos = syntax_error_position(parsed.error)
        return None, [Problem((), f"invalid YAML: {syntax_error_text(parsed.error)}",
                              file=path, pos=pos)]
    data = parsed.data if parsed.data is not None else {}
    if not isinstance(data, dict):
        return None, [Problem((), f"expected a mapping with vars, groups and hosts, got"
                                  f" {describe(data)}", file=path)]
    try:
        return Inventory.model_validate(data), []
    except ValidationError as exc:
        found = problems_from(exc, Inventory)
        return None, [Problem(p.path, p.message, p.hint, p.at_key, file=path) for p in found]


def resolve_hosts(hosts: Hosts, config_file: Path, defined_in: Path | None = None) -> ResolvedHosts:
    """Resolve the inventory (if any) and the inline list into concrete hosts."""
    inventory: Inventory | None = None
    inv_file: Path | None = None
    problems: list[Problem] = []
    if hosts.inventory is not None:
        base = (defined_in or config_file).parent
        try:
            written = expand_env(hosts.inventory)
        except ValueError as exc:
            return ResolvedHosts(problems=(Problem(INVENTORY_KEY, str(exc)),))
        inv_file = (base / written).resolve()
        try:
            inventory, problems = load_inventory(inv_file)
        except OSError as exc:
            reason = "not found" if isinstance(exc, FileNotFoundError) else exc.strerror
            origin = f"from '{hosts.inventory}', " if written != hosts.inventory else ""
            relative = "" if Path(written).is_absolute() else f"relative to {base.name}/"
            where = f" ({origin}{relative})" if origin or relative else ""
            problem = Problem(INVENTORY_KEY, f"inventory file {reason}: {written}"
                              f"{where.replace(', )', ')')}", SANDBOX_HINT)
            return ResolvedHosts(problems=(problem,), inventory_file=inv_file)
        if inventory is None:
            return ResolvedHosts(problems=tuple(problems), inventory_file=inv_file)
    inv = inventory or Inventory()
    resolved, problems = _merge(inv, hosts, inv_file)
    return ResolvedHosts(resolved, MappingProxyType(dict(inv.vars)), tuple(problems), inv_file)


def _merge(inv: Inventory, hosts: Hosts, inv_file: Path | None) -> tuple[tuple[Host, ...], list[Problem]]:
    group_vars: dict[str, dict[str, Any]] = {}
    group_queue: dict[str, str] = {}  # the config's groups win over the inventory's
    for groups in (inv.groups, hosts.groups):
        for name, group in groups.items():
            group_vars.setdefault(name, {}).update(group.vars)
            if group.airflow.queue is not None:
                group_queue[name] = group.airflow.queue
    base_vars = {**inv.vars, **hosts.vars}
    entries: list[tuple[HostEntry, tuple[str | int, ...], Path | None]] = [
        (entry, ("hosts", index), inv_file) for index, entry in enumerate(inv.hosts)
    ]
    entries += [(entry, ("hosts", "list", i), None) for i, entry in enumerate(hosts.list)]
    problems: list[Problem] = [  # an app's own config says what its hosts need
        Problem(("groups", name, "runtime"), "runtime is read from the app config's "
                "hosts.groups, not an inventory", f"move it to hosts.groups.{name}.runtime of "
                "the app config", at_key=True, file=inv_file)
        for name, group in inv.groups.items() if group.runtime is not None]
    seen_names: dict[str, tuple[tuple[str | int, ...], Path | None]] = {}
    seen_addresses: dict[tuple[str, int], tuple[tuple[str | int, ...], Path | None]] = {}
    out: list[Host] = []
    by_group: dict[str | None, MappingProxyType[str, Any]] = {}
    for entry, path, file in entries:
        first = seen_names.setdefault(entry.name, (path, file))
        if first != (path, file):
            problems.append(Problem((*path, "name"), f"duplicate host name '{entry.name}'"
                                    f" (first defined at {_where(*first)})", file=file))
        address = (entry.address, entry.ssh_port)
        first = seen_addresses.setdefault(address, (path, file))
        if first != (path, file):
            problems.append(Problem((*path, "address"), f"duplicate address"
                                    f" {entry.address}:{entry.ssh_port} (first used at"
                                    f" {_where(*first)})", file=file))
        shared = by_group.get(entry.group)
        if shared is None:  # hosts without vars of their own share their group's mapping
            shared = by_group[entry.group] = MappingProxyType(
                {**base_vars, **group_vars.get(entry.group or "", {})})
        merged = MappingProxyType({**shared, **entry.vars}) if entry.vars else shared
        queue = entry.airflow.queue or group_queue.get(entry.group or "")
        out.append(Host(entry.name, entry.address, entry.ssh_port, entry.group, merged, queue))
    return tuple(out), problems


def _where(path: tuple[str | int, ...], file: Path | None) -> str:
    return f"{'inventory ' if file is not None else ''}{dotted(path)}"
