"""``tars pools sync``: create or resize the Airflow pools the app configs name
(``traffic.pool``), over the REST API (``TARS_AIRFLOW_URL`` and credentials, as ``tars deploy``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tars_operators.cli import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, arg, command


@command(
    "pools", "create or resize the Airflow pools of traffic.pool (sync), or show them (list)",
    arg("action", choices=["sync", "list"], help="sync: make every pool the configs name, "
        "with their slots; list: show them beside Airflow's"),
    arg("--config-dir", type=Path, default=None, help="app configs (default: configs/apps, or"
        " $TARS_CONFIG_DIR)"),
)
def _pools(args: argparse.Namespace) -> int:
    from tars_operators.cli import _default_config_dir
    from tars_operators.client.api import Airflow, ApiError
    from tars_operators.config.loader import load_all
    from tars_operators.errors import ConfigError
    from tars_operators.release.pools import apply, pool_change, read_pool, wanted

    loaded = load_all(args.config_dir or _default_config_dir())
    for errors in loaded.errors.values():
        for line in errors.errors:
            print(line, file=sys.stderr)
    try:
        pools = wanted(loaded.specs.values())
    except ConfigError as exc:
        print(f"tars pools: {exc}", file=sys.stderr)
        return EXIT_ERRORS
    if not pools:
        print("no app config sets traffic.pool")
        return EXIT_ERRORS if loaded.errors else EXIT_OK
    try:
        api = Airflow.from_env()
        for name, slots in pools.items():
            found = read_pool(api, name)
            change = pool_change(name, slots, found, resize=args.action == "sync")
            if args.action == "sync":
                apply(api, change)
            now = "missing" if found is None else f"{found.get('slots')} slots" + (
                "" if found.get("include_deferred") else ", deferred tasks not counted")
            did = ("created" if change.create else
                   "set " + ", ".join(f"{k}={v}" for k, v in change.patch) if change.patch
                   else "as configured")
            print(f"{name}: {slots} slots in the configs; Airflow: {now}"
                  + (f" → {did}" if args.action == "sync" else ""))
    except ApiError as exc:
        print(f"tars pools: {exc}", file=sys.stderr)
        return EXIT_USAGE if exc.status is None else EXIT_ERRORS
    return EXIT_ERRORS if loaded.errors else EXIT_OK
