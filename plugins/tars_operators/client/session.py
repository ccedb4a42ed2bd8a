"""What every ``tars`` REST command needs: a client from the environment, error exits."""

from __future__ import annotations

import difflib
import sys
from typing import Any

from tars_operators.cli import EXIT_ERRORS, EXIT_USAGE
from tars_operators.client.api import Airflow, ApiError
from tars_operators.client.follow import say
from tars_operators.errors import PlanError
from tars_operators.plan.conf import check_run_conf

# Every app has a deploy DAG: its id is how the client knows which apps exist.
DEPLOY_PREFIX = "tars_deploy__"


def deploy_dag(app: str) -> str:
    return f"{DEPLOY_PREFIX}{app}"


def refused(name: str, message: str) -> int:
    """Print why the input is refused (before any run exists) and return exit code 2."""
    print(f"tars {name}: {message}", file=sys.stderr)
    return EXIT_USAGE


def known_app(api: Airflow, app: str) -> dict[str, Any]:
    """The app's deploy DAG; ``ApiError`` 404 naming the app and listing the known ones."""
    try:
        return api.dag(deploy_dag(app))
    except ApiError as exc:
        if exc.status != 404:
            raise
    apps = [dag_id[len(DEPLOY_PREFIX):] for dag_id in api.dag_ids(DEPLOY_PREFIX)]
    close = difflib.get_close_matches(app, apps, n=1, cutoff=0.6)
    raise ApiError(
        f"unknown app {app!r}: Airflow has no DAG {deploy_dag(app)} (apps: "
        f"{', '.join(apps) or 'none'})" + (f"; did you mean {close[0]!r}?" if close else "")
        + ". A new app's config must be in configs/apps and pass `tars lint` (see the UI's "
        "DAG import errors)", 404)


def api_error(name: str, exc: ApiError) -> int:
    """Print why the API refused and return the exit code: 2 for input/auth, 1 otherwise."""
    status = exc.status
    if status in (401, 403):
        hint = ("check TARS_AIRFLOW_TOKEN (tokens expire) or TARS_AIRFLOW_USER/PASSWORD"
                if status == 401 else "ask for permission on the app's DAGs")
        print(f"tars {name}: not allowed ({status}): {exc}; {hint}", file=sys.stderr)
        return EXIT_USAGE
    # Param validation answers with the whole JSON Schema after a blank line: the first
    # paragraph says it all.
    print(f"tars {name}: {str(exc).split(chr(10) * 2, 1)[0]}", file=sys.stderr)
    return EXIT_USAGE if status is None or 400 <= status < 500 else EXIT_ERRORS


def connect(name: str) -> Airflow | int:
    """The API client from the environment, or the exit code after saying what is missing."""
    try:
        api = Airflow.from_env()
        api._auth()  # fail early on bad credentials, before anything is triggered
        return api
    except ApiError as exc:
        return api_error(name, exc)


def form_refusal(dag: dict[str, Any], conf: dict[str, Any]) -> str | None:
    """Why the DAG's form (``params`` of its details) refuses ``conf``, or None.

    The client and the api-server may be of different Tars versions: a key this client sends
    that the DAG does not know would be refused by the api-server anyway; say it first.
    """
    params = dag.get("params")
    if not isinstance(params, dict):
        return None
    try:
        check_run_conf(conf, params, str(dag.get("dag_id", "the DAG")))
    except PlanError as exc:
        return str(exc)
    return None


def runnable(api: Airflow, app: str, dag_id: str, *, unpause: bool = False) -> dict[str, Any]:
    """``dag_id``'s details (its form in ``params``); ``ApiError`` 404 (unknown app or DAG)
    or 409 (paused)."""
    try:
        dag = api.dag_details(dag_id)
    except ApiError as exc:
        if exc.status != 404:
            raise
        known_app(api, app)  # an unknown app says so and lists the known ones
        raise ApiError(f"no DAG {dag_id} in Airflow: is the app's config in configs/apps "
                       "and free of errors (`tars lint`)? See the UI's DAG import errors",
                       404) from None
    if not dag.get("is_paused"):
        return dag
    if unpause:
        api.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        say(f"unpaused {dag_id}")
        return dag
    raise ApiError(
        f"{dag_id} is paused, so a run would wait forever. Unpause it with the toggle in the "
        f"UI, `tars deploy … --unpause`, or: curl -X PATCH \"$TARS_AIRFLOW_URL/api/v2/dags/"
        f"{dag_id}\" -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
        "-d '{\"is_paused\": false}'", 409)
