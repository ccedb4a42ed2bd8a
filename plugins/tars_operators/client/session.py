"""What every ``tars`` REST command needs: a client from the environment, error exits."""

from __future__ import annotations

import sys

from tars_operators.cli import EXIT_ERRORS, EXIT_USAGE
from tars_operators.client.api import Airflow, ApiError
from tars_operators.client.follow import say


def deploy_dag(app: str) -> str:
    return f"tars_deploy__{app}"


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


def runnable(api: Airflow, dag_id: str, *, unpause: bool = False) -> None:
    """Raise ``ApiError`` (404/409) unless ``dag_id`` exists and is not paused."""
    try:
        dag = api.dag(dag_id)
    except ApiError as exc:
        if exc.status == 404:
            raise ApiError(f"no DAG {dag_id} in Airflow: is the app's config in configs/apps "
                           "and free of errors (`tars lint`)? See the UI's DAG import errors",
                           404) from None
        raise
    if not dag.get("is_paused"):
        return
    if unpause:
        api.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        say(f"unpaused {dag_id}")
        return
    raise ApiError(
        f"{dag_id} is paused, so a run would wait forever. Unpause it with the toggle in the "
        f"UI, `tars deploy … --unpause`, or: curl -X PATCH \"$TARS_AIRFLOW_URL/api/v2/dags/"
        f"{dag_id}\" -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
        "-d '{\"is_paused\": false}'", 409)
