"""``tars assemble APP``: start ``tars_assemble__APP`` over REST (httpx only, no Airflow import).

Exit codes like ``tars deploy``: 0 started (with ``--wait``: succeeded), 1 the run failed or
timed out, 2 bad input, an unknown app or an API error.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from tars_operators.cli import EXIT_ERRORS, EXIT_OK, arg, command
from tars_operators.client.api import ApiError
from tars_operators.client.follow import say
from tars_operators.client.session import api_error, connect, form_refusal, refused, runnable


def assemble_conf(args: argparse.Namespace) -> dict[str, Any]:
    """The run's conf: the DAG's form fields (unset options keep its defaults)."""
    conf: dict[str, Any] = {"reason": args.reason, "dry_run": bool(args.dry_run),
                            "install": bool(args.install)}
    if args.hosts:
        conf["hosts"] = [h.strip() for h in args.hosts.split(",") if h.strip()]
    if args.version:
        conf["version"] = args.version
    return conf


@command(
    "assemble", "make hosts of APP ready (runtime.assemble, then runtime.requires checked) and, "
    "with --install, put the app's good version on them, healthy and in rotation "
    "(tars_assemble__APP)",
    arg("app", help="app name (app.name)"),
    arg("--hosts", default=None, help="these hosts, comma separated (default: the hosts with no "
        "release yet)"),
    arg("--dry-run", action="store_true", help="only check what each step would change"),
    arg("--install", action="store_true", help="then install the version the other hosts run "
        "and put the hosts in rotation"),
    arg("--version", default=None, help="with --install: this version instead"),
    arg("--reason", required=True, help="why (run note)"),
    arg("--wait", action="store_true", help="wait for the run; exit 0 on success, 1 otherwise"),
    arg("--timeout", type=float, default=1800.0, help="with --wait: give up after this many "
        "seconds (default: 1800)"),
)
def assemble(args: argparse.Namespace) -> int:
    api = connect("assemble")
    if isinstance(api, int):
        return api
    dag_id = f"tars_assemble__{args.app}"
    conf = assemble_conf(args)
    try:
        problem = form_refusal(runnable(api, args.app, dag_id), conf)
        if problem:
            return refused("assemble", problem)
        run = api.trigger(dag_id, conf)
        run_id = run["dag_run_id"]
        say(f"triggered {dag_id} run {run_id}: {api.url}/dags/{dag_id}/runs/{quote(run_id)}")
        if not args.wait:
            return EXIT_OK
        final = api.wait(dag_id, run_id, timeout=args.timeout)
    except ApiError as exc:
        return api_error("assemble", exc)
    say(f"{dag_id} run {run_id}: {final.get('state')}")
    if final.get("note"):
        say(str(final["note"]))
    return EXIT_OK if final.get("state") == "success" else EXIT_ERRORS
