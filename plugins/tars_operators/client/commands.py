"""``tars deploy | status | approve | brake | release-brake | rollback``: Airflow over REST.

For CI jobs: needs httpx only (never imports Airflow). Reads ``TARS_AIRFLOW_URL`` and
``TARS_AIRFLOW_TOKEN`` or ``TARS_AIRFLOW_USER``/``TARS_AIRFLOW_PASSWORD``. Exit codes: 0 done
(with ``--wait``: the release succeeded), 1 the release failed, rolled back, halted or timed
out, 2 bad input, an unknown app, a paused DAG or an authentication/permission error.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timezone
from typing import Any, cast
from urllib.parse import quote

from tars_operators.cli import EXIT_OK, EXIT_USAGE, REQUEST_ARGS, arg, command
from tars_operators.client import status as _status  # noqa: F401 - registers `tars status`
from tars_operators.client.api import Airflow, ApiError
from tars_operators.client.follow import Follow, say
from tars_operators.client.session import (
    api_error,
    connect,
    deploy_dag,
    form_refusal,
    known_app,
    refused,
    runnable,
)
from tars_operators.errors import InvalidValue, PlanError
from tars_operators.plan.conf import LATEST, parse_batches
from tars_operators.remote.validate import validate_version

OPTIONS = {"continue": "Continue", "reject": "Roll back", "halt": "Halt"}
WAIT_ARGS = (
    arg("--wait", action="store_true", help="follow the run stage by stage; exit 0 on success,"
        " 1 on failure or rollback"),
    arg("--timeout", type=float, default=7200.0, help="with --wait: give up after this many"
        " seconds (exit 1; the run goes on) (default: 7200)"),
    arg("--poll", type=float, default=2.0, help=argparse.SUPPRESS),
)


# ---- tars deploy -----------------------------------------------------------------------


def deploy_conf(args: argparse.Namespace) -> dict[str, Any]:
    """The run's conf (the trigger form's params); unset options keep the form's defaults."""
    conf: dict[str, Any] = {"version": args.version}
    for key in ("reason", "ticket", "batches"):
        if getattr(args, key) is not None:
            conf[key] = getattr(args, key)
    if args.hosts is not None:
        conf["hosts"] = [h.strip() for h in args.hosts.split(",") if h.strip()]
    if args.force is not None:
        conf.update(force=True, force_reason=args.force)
    if args.skip_fort is not None:
        conf.update(skip_fort=True, skip_fort_reason=args.skip_fort)
    if args.dry_run:
        conf["dry_run"] = True
    return conf


def input_refusal(args: argparse.Namespace) -> str | None:
    """What ``prepare`` would refuse that needs no Airflow to see: the version, the ramp, a
    force or skipped fort without a reason (the same functions ``prepare`` uses)."""
    try:
        if args.version not in LATEST:
            validate_version(args.version)
        parse_batches(args.batches)
    except (InvalidValue, PlanError) as exc:
        return str(exc)
    for flag, reason in (("--force", args.force), ("--skip-fort", args.skip_fort)):
        if reason is not None and not reason.strip():
            return f"{flag} needs a reason (it is recorded in the run note and the audit trail)"
    return None


def precheck(api: Airflow, app: str, conf: dict[str, Any]) -> dict[str, Any] | None:
    """Ask the Tars plan route what this release would do; ``ApiError`` 400 on bad input."""
    params: dict[str, Any] = {"version": conf["version"]}
    if conf.get("hosts"):
        params["hosts"] = ",".join(conf["hosts"])
    if conf.get("batches"):
        params["batches"] = conf["batches"]
    for flag, why in (("skip_fort", "skip_fort_reason"), ("force", "force_reason")):
        if conf.get(flag):  # the route refuses a skip or force without its reason, as a run does
            params[flag], params[why] = "true", conf.get(why, "")
    try:
        return cast("dict[str, Any]", api.request("GET", f"/tars/apps/{quote(app)}/plan",
                                                  params=params))
    except ApiError as exc:
        if exc.status == 404:  # the plugin's config dir differs: the DAG's params still check
            say(f"plan pre-check unavailable ({exc}); the trigger form's checks still apply")
            return None
        raise


def describe_plan(preview: dict[str, Any], forced: bool) -> list[str]:
    """What the plan pre-check said, for the log: stages, and the window if it is closed."""
    plan = preview["plan"]
    stages = ", ".join(f"{s['name']} {len(s['hosts'])}" for s in plan["stages"])
    lines = [f"plan: {len(plan['stages'])} stage(s) ({stages}) → {preview['version']}; "
             f"min in service {plan['min_in_service']}/{plan['fleet_size']}"]
    sched = preview["schedule"]
    if not sched["open"]:
        policy = ("forced past it" if forced else "the run will be refused" if
                  sched["frozen_by"] or sched["outside_window"] == "reject" else
                  "the run will wait for it")
        lines.append(f"deploy window CLOSED: {sched['reason']} — {policy}")
    return lines


@command(
    "deploy", "release APP at VERSION through tars_deploy__APP (REST; for CI jobs)",
    arg("app", help="app name (app.name)"),
    arg("version", help="the version to release, or 'latest' when the app has a latest pointer"),
    *REQUEST_ARGS,
    arg("--dry-run", action="store_true", help="plan and validate only; touch no host"),
    arg("--unpause", action="store_true", help="unpause the app's DAG if it is paused"),
    *WAIT_ARGS,
)
def deploy(args: argparse.Namespace) -> int:
    problem = input_refusal(args)
    if problem:
        return refused("deploy", problem)
    api = connect("deploy")
    if isinstance(api, int):
        return api
    dag_id, conf = deploy_dag(args.app), deploy_conf(args)
    try:
        problem = form_refusal(runnable(api, args.app, dag_id, unpause=args.unpause), conf)
        if problem:
            return refused("deploy", problem)
        preview = precheck(api, args.app, conf)
        for line in describe_plan(preview, bool(args.force)) if preview else []:
            say(line)
        busy = in_progress(api, dag_id)
        note = None
        if busy:
            # One release per app at a time (max_active_runs=1): this one queues behind it.
            say(f"another release of {args.app} is in progress (run {busy['dag_run_id']}, "
                f"{busy['state']}); this release waits until it ends")
            note = f"queued behind {busy['dag_run_id']}: one release per app at a time"
        version = str((preview or {}).get("version") or conf.get("version") or "latest")
        run = api.trigger(dag_id, conf, note=note, run_id=release_run_id(version))
    except ApiError as exc:
        return api_error("deploy", exc)
    return started(api, args, dag_id, run, "deploy")


def release_run_id(version: str) -> str:
    """``release__2.0.0__<UTC time>``: the runs list shows which version each run released."""
    safe = re.sub(r"[^A-Za-z0-9_.~+-]", "_", version)[:64]
    return f"release__{safe}__{datetime.now(timezone.utc).isoformat(timespec='microseconds')}"


def in_progress(api: Airflow, dag_id: str) -> dict[str, Any] | None:
    """The app's release that is running or queued now, if any."""
    return next((r for r in api.runs(dag_id, limit=5) if r["state"] in ("running", "queued")),
                None)


def started(api: Airflow, args: argparse.Namespace, dag_id: str, run: dict[str, Any],
            name: str) -> int:
    """Say what was triggered; with ``--wait``, follow it to the end."""
    run_id = run["dag_run_id"]
    say(f"triggered {dag_id} run {run_id}: {api.url}/dags/{dag_id}/runs/{quote(run_id)}")
    if not args.wait:
        return EXIT_OK
    hint = f"tars approve {args.app} {run_id} [--reject|--halt]"
    follow = Follow(api, dag_id, run_id, timeout=args.timeout, poll=args.poll, approve_hint=hint)
    try:
        return follow.run()
    except ApiError as exc:
        return api_error(name, exc)


# ---- tars rollback ---------------------------------------------------------------------


@command(
    "rollback", "undo the app's latest release (each host back to what it ran before it) and "
    "repair: every listed host ends running a good release, healthy and UP (tars_rollback__APP); "
    "the command Tars names in a note to repair hosts",
    arg("app", help="app name (app.name)"),
    arg("--reason", required=True, help="why (run note, audit trail)"),
    arg("--ticket", default="", help="change ticket"),
    arg("--hosts", default=None, help="only these hosts, comma separated"),
    arg("--version", default=None,
        help="go to this version on every listed host instead (it must be staged there as good)"),
    *WAIT_ARGS,
)
def rollback(args: argparse.Namespace) -> int:
    api = connect("rollback")
    if isinstance(api, int):
        return api
    dag_id = f"tars_rollback__{args.app}"
    conf: dict[str, Any] = {"reason": args.reason, "ticket": args.ticket}
    if args.hosts:
        conf["hosts"] = [h.strip() for h in args.hosts.split(",") if h.strip()]
    if args.version is not None:
        conf["version"] = args.version
    try:
        problem = form_refusal(runnable(api, args.app, dag_id), conf)
        if problem:
            return refused("rollback", problem)
        run = api.trigger(dag_id, conf)
    except ApiError as exc:
        return api_error("rollback", exc)
    return started(api, args, dag_id, run, "rollback")


# ---- tars approve ----------------------------------------------------------------------


@command(
    "approve", "answer the approval a release of APP waits for (default: continue)",
    arg("app", help="app name (app.name)"),
    arg("run", nargs="?", default=None, help="run id (default: the one run waiting)"),
    arg("--reject", action="store_true", help="roll back every host the run touched"),
    arg("--halt", action="store_true", help="stop here; hosts stay as they are"),
)
def approve(args: argparse.Namespace) -> int:
    if args.reject and args.halt:
        print("tars approve: --reject and --halt exclude each other", file=sys.stderr)
        return EXIT_USAGE
    option = OPTIONS["reject" if args.reject else "halt" if args.halt else "continue"]
    api = connect("approve")
    if isinstance(api, int):
        return api
    try:
        known_app(api, args.app)
        waiting = pending(api, args.app, args.run)
        if len(waiting) != 1:
            return none_or_many(args, waiting)
        item = waiting[0]
        ti = item["task_instance"]
        if option not in item.get("options", []):
            print(f"tars approve: {ti['task_id']} offers {item.get('options')}, not {option!r}",
                  file=sys.stderr)
            return EXIT_USAGE
        api.answer(ti["dag_id"], ti["dag_run_id"], ti["task_id"], option, ti["map_index"])
    except ApiError as exc:
        return api_error("approve", exc)
    say(f"answered {option!r}: {item.get('subject', '')} ({ti['dag_id']} run "
        f"{ti['dag_run_id']}, {ti['task_id']})")
    return EXIT_OK


def pending(api: Airflow, app: str, run_id: str | None) -> list[dict[str, Any]]:
    """Unanswered approvals of the app's deploy and canary DAGs (of one run, if given)."""
    found: list[dict[str, Any]] = []
    for dag_id in (deploy_dag(app), f"tars_canary__{app}"):
        try:
            found += api.pending_approvals(dag_id, run_id or "~")
        except ApiError as exc:
            if exc.status != 404:
                raise
    return [h for h in found if h.get("task_instance", {}).get("state") == "awaiting_input"
            or "state" not in h.get("task_instance", {})]


def none_or_many(args: argparse.Namespace, waiting: list[dict[str, Any]]) -> int:
    where = f"run {args.run} of {args.app}" if args.run else args.app
    if not waiting:
        print(f"tars approve: nothing awaits approval for {where}", file=sys.stderr)
        return EXIT_USAGE
    print(f"tars approve: {len(waiting)} approvals wait for {where}; name the run:",
          file=sys.stderr)
    for item in waiting:
        ti = item["task_instance"]
        print(f"  {ti['dag_id']} {ti['dag_run_id']} {ti['task_id']}: {item.get('subject')}",
              file=sys.stderr)
    return EXIT_USAGE


# ---- tars brake | release-brake --------------------------------------------------------


@command(
    "brake", "pull the brake: releases of APP hold before their next host (or roll back)",
    arg("app", help="app name (app.name)"),
    arg("--reason", required=True, help="why (audit trail)"),
    arg("--rollback", action="store_true", help="roll back at the next gate instead of holding"),
)
def brake(args: argparse.Namespace) -> int:
    api = connect("brake")
    if isinstance(api, int):
        return api
    body = {"reason": args.reason, "action": "rollback" if args.rollback else "hold"}
    try:
        known_app(api, args.app)  # the brake route takes any name: a typo would brake nothing
        state = api.request("POST", f"/tars/apps/{quote(args.app, safe='')}/brake", json=body)
    except ApiError as exc:
        return api_error("brake", exc)
    b = state.get("brake") or {}
    say(f"brake pulled on {args.app} by {b.get('by', '?')} ({b.get('action', body['action'])}):"
        f" {b.get('reason', args.reason)}; release it with: tars release-brake {args.app}")
    return EXIT_OK


@command(
    "release-brake", "release the brake of APP: held releases continue",
    arg("app", help="app name (app.name)"),
    arg("--reason", default="", help="why (audit trail)"),
)
def release_brake(args: argparse.Namespace) -> int:
    api = connect("release-brake")
    if isinstance(api, int):
        return api
    try:
        known_app(api, args.app)
        state = api.request("DELETE", f"/tars/apps/{quote(args.app, safe='')}/brake",
                            params={"reason": args.reason})
    except ApiError as exc:
        return api_error("release-brake", exc)
    was = state.get("was")
    say(f"brake of {args.app} released (was pulled by {was['by']}: {was['reason']})" if was
        else f"no brake was pulled on {args.app}")
    return EXIT_OK
