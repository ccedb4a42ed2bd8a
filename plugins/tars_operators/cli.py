"""``tars``: the command line. ``lint``, ``plan`` and ``schema`` work on config files alone.

Subcommands are registered with :func:`command`; ``main`` builds the parser from the
registry. The Airflow-facing commands (deploy, status, approve, brake, release-brake,
rollback) live in ``tars_operators.client`` and register themselves the same way when
imported (see ``EXTENSIONS``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI loads the config package only when a command needs it
    from tars_operators.config.spec import AppSpec

Handler = Callable[[argparse.Namespace], int]

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2
# Modules that add subcommands by calling ``command`` at import time.
EXTENSIONS = ("tars_operators.client.commands", "tars_operators.client.assemble",
              "tars_operators.client.pools")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    arguments: tuple[tuple[tuple[str, ...], dict[str, Any]], ...]
    run: Handler


COMMANDS: dict[str, Command] = {}


def arg(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """One ``add_argument`` call, for :func:`command`."""
    return flags, kwargs


def command(
    name: str, help: str, *arguments: tuple[tuple[str, ...], dict[str, Any]]
) -> Callable[[Handler], Handler]:
    """Register ``tars NAME``: the function gets the parsed arguments and returns the exit code."""

    def register(run: Handler) -> Handler:
        COMMANDS[name] = Command(name, help, arguments, run)
        return run

    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tars", description="Tars: safe releases as Airflow DAGs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        sub = subparsers.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        for flags, kwargs in cmd.arguments:
            sub.add_argument(*flags, **kwargs)
        sub.set_defaults(handler=cmd.run)
    return parser


def _load_extensions() -> None:
    for module in EXTENSIONS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # not written (or not installed) yet: skip it only
            if exc.name is None or not module.startswith(exc.name):
                raise


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tars`` script; returns the exit code."""
    _load_extensions()
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


# What a release request may say, the same options for `tars plan` and `tars deploy`.
REQUEST_ARGS = (
    arg("--reason", default=None, help="why (run note, audit trail)"),
    arg("--ticket", default=None, help="change ticket, e.g. OPS-1234"),
    arg("--hosts", default=None, help="only these hosts, comma separated"),
    arg("--batches", default=None, help="ramp override, e.g. '1,25%%,100%%'"),
    arg("--force", metavar="REASON", default=None, help="run outside the deploy window or"
        " through a freeze; the reason is recorded"),
    arg("--skip-fort", metavar="REASON", default=None, help="no fort stage; the reason is"
        " recorded"),
)


def _default_config_dir() -> Path:
    return Path(os.environ.get("TARS_CONFIG_DIR", "configs/apps"))


# ---- tars lint -------------------------------------------------------------------------


@command(
    "lint", "validate app configs; print every error of every file",
    arg("paths", nargs="*", type=Path, help="files or directories (default: configs/apps)"),
)
def _lint(args: argparse.Namespace) -> int:
    from tars_operators.config.lint import lint

    report = lint(args.paths or [_default_config_dir()])
    for line in report.missing + report.errors:
        print(line)
    for spec in report.ok:
        print(f"OK {spec.name}: {_shown(spec.source)} ({_summary(spec)})")
    if not report.files:
        print("tars lint: no app configs (*.yaml) found")
        return EXIT_ERRORS
    if report.errors:
        print(f"{report.files_with_errors} of {report.files} file(s) have errors")
    return EXIT_ERRORS if report.errors or report.missing else EXIT_OK


def _shown(path: Path) -> str:
    from tars_operators.config.problems import display_path

    return display_path(path, None)


def _summary(spec: AppSpec) -> str:
    plan = spec.default_plan
    stages = ", ".join(f"{s.name} {len(s.hosts)}" for s in plan.stages)
    return f"{len(spec.hosts)} hosts; {stages}"


# ---- tars plan -------------------------------------------------------------------------


@command(
    "plan", "show the stages, hosts, budgets and windows of a release, without running it",
    arg("app", help="app name (app.name)"),
    arg("--config-dir", type=Path, default=None, help="app configs (default: configs/apps, or"
        " $TARS_CONFIG_DIR)"),
    arg("--version", default=None, help="the version to release (checked against"
        " artifact.version_pattern)"),
    *REQUEST_ARGS,
    arg("--json", action="store_true", help="print JSON instead of a table"),
    arg("--check-hosts", action="store_true", help="also check runtime.requires on the planned"
        " hosts over SSH now (needs the app's Airflow SSH connection, e.g. AIRFLOW_CONN_*)"),
)
def _plan(args: argparse.Namespace) -> int:
    from tars_operators.errors import TarsError
    from tars_operators.plan.preview import preview, render_table
    from tars_operators.plan.request import ReleaseRequest, plan_request
    from tars_operators.plan.windows import window_status

    spec = _find_app(args.app, args.config_dir or _default_config_dir())
    if isinstance(spec, int):
        return spec
    request = ReleaseRequest(
        version=args.version, hosts=args.hosts, batches=args.batches,
        skip_fort=args.skip_fort is not None, skip_fort_reason=args.skip_fort or "",
        force=args.force is not None, force_reason=args.force or "",
        reason=args.reason or "", ticket=args.ticket or "",
    )
    try:  # the rule a run applies (plan/request.py): what `tars plan` accepts, a run accepts
        plan = plan_request(spec, request)
    except TarsError as exc:
        print(f"tars plan: {exc}", file=sys.stderr)
        return EXIT_USAGE
    now = datetime.now(timezone.utc)
    data = preview(spec, plan, window_status(spec.config.schedule, now), now=now)
    if args.check_hosts:  # readiness: the check preflight makes, run from here
        from tars_operators.assembly.preflight import check_hosts

        found = check_hosts(spec, plan.all_hosts)
        data["readiness"] = [found[n].as_dict() for n in plan.all_hosts]
    print(json.dumps(data, indent=2) if args.json else render_table(data)
          + (_readiness(data["readiness"]) if args.check_hosts else ""))
    return EXIT_OK


def _readiness(rows: list[dict[str, Any]]) -> str:
    """``host  ready|NOT READY  what is missing`` lines under the plan's table."""
    lines = ["", "readiness (runtime.requires, checked now):"]
    for row in rows:
        missing = [f"{c['requirement']}: found {c['found']}, expected {c['expected']}"
                   for c in row["checks"] if not c["ok"]]
        state = ("not checked: " + row["error"] if row["error"]
                 else "ready" if row["ready"] else "NOT READY: " + "; ".join(missing))
        lines.append(f"  {row['host']}: {state}")
    return "\n".join(lines) + "\n"


def _find_app(name: str, config_dir: Path) -> Any:
    """The app's spec, or an exit code after printing why there is none."""
    from tars_operators.config.finder import find_app
    from tars_operators.config.problems import did_you_mean

    if not config_dir.is_dir():
        print(f"tars plan: config directory not found: {config_dir}", file=sys.stderr)
        return EXIT_USAGE
    found = find_app(config_dir, name)
    if found.spec is not None:
        return found.spec
    if found.errors:
        for line in found.errors:
            print(line, file=sys.stderr)
        return EXIT_ERRORS
    hint = did_you_mean(name, found.known)
    known = ", ".join(found.known) or "none"
    print(f"tars plan: unknown app '{name}' in {config_dir} (apps: {known})"
          + (f"; {hint}" if hint else ""), file=sys.stderr)
    return EXIT_USAGE


# ---- tars schema -----------------------------------------------------------------------


@command(
    "schema", "print the JSON Schema of an app config (for yaml-language-server, editors)",
    arg("--output", type=Path, default=None, help="write to this file instead of stdout"),
)
def _schema(args: argparse.Namespace) -> int:
    from tars_operators.config.jsonschema import app_config_schema

    text = json.dumps(app_config_schema(), indent=2) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


# ---- deploy | status | approve | brake | release-brake | rollback -------------------------
# Registered by tars_operators.client.commands (see EXTENSIONS) with @command, like the above.
