"""Files other code reads: inventory.yaml, connection.json (Airflow connection) and env."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sandbox.haproxy import BACKEND
from sandbox.layout import Host, Layout, Settings


def _q(value: object) -> str:
    # A JSON string is a valid YAML flow scalar, and safe for any path.
    return json.dumps(str(value))


def queues_inventory(layout: Layout) -> Path:
    """The inventory for the celery engine: the same hosts, each datacenter's group naming its
    Celery queue (dc1 → queue dc1). inventory.yaml names none, so on the LocalExecutor a
    stage keeps one release task (``fort.release``) instead of one per queue."""
    return layout.inventory.with_name("inventory-queues.yaml")


def render_inventory(layout: Layout, settings: Settings, hosts: Sequence[Host], *,
                     queues: bool = False) -> str:
    """inventory.yaml (a contract other code parses: keep the keys)."""
    dc = ", airflow: {{queue: {0}}}" if queues else ""
    lines = [
        "# written by `python -m sandbox up`; do not edit",
        "vars:",
        f"  artifact_base: {_q(f'http://127.0.0.1:{settings.artifact_port}')}",
        f"  haproxy_socket: {_q(layout.haproxy_socket)}",
        f"  haproxy_backend: {BACKEND}",
        f"  frontend_url: {_q(f'http://127.0.0.1:{settings.frontend_port}')}",
        "groups:",
        "  dc1: {vars: {datacenter: dc1}" + dc.format("dc1") + "}",
        "  dc2: {vars: {datacenter: dc2}" + dc.format("dc2") + "}",
        "hosts:",
    ]
    for h in hosts:
        lines += [
            f"  - name: {h.name}",
            f"    address: {h.address}",
            f"    ssh_port: {h.ssh_port}",
            f"    group: {h.group}",
            f"    vars: {{deploy_root: {_q(h.deploy_root)}, app_port: {h.app_port}}}",
        ]
    return "\n".join(lines) + "\n"


def connection(layout: Layout, settings: Settings) -> dict[str, Any]:
    """Airflow SSH connection for the sandbox; host and port come per host from the inventory."""
    return {
        "conn_type": "ssh",
        "login": settings.user,
        "extra": {"key_file": str(layout.client_key), "known_hosts": str(layout.known_hosts)},
    }


def write_all(layout: Layout, settings: Settings, hosts: Sequence[Host]) -> None:
    """Write inventory.yaml, connection.json and env."""
    layout.inventory.write_text(render_inventory(layout, settings, hosts))
    queues_inventory(layout).write_text(render_inventory(layout, settings, hosts, queues=True))
    conn = json.dumps(connection(layout, settings))
    layout.connection.write_text(conn + "\n")
    layout.env.write_text(f"export AIRFLOW_CONN_TARS_SANDBOX={shlex.quote(conn)}\n")
