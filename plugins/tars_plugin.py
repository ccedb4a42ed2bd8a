"""The Tars Airflow plugin: REST routes for the brake and audit trail, the window timetable,
and the guard that refuses a trigger whose conf the DAG's form does not know."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from tars_operators import preload
from tars_operators.api import app as tars_api
from tars_operators.conf_guard import RunConfGuard
from tars_operators.timetables import WindowTimetable

# Task processes fork from a process that loaded this plugin: what they import is imported here
# once, not in every task (tars_operators/preload.py).
preload.load()


class TarsPlugin(AirflowPlugin):
    name = "tars"
    fastapi_apps = [{"app": tars_api, "url_prefix": "/tars", "name": "Tars"}]
    # Airflow ignores conf keys outside the form ({"dryrun": true} ran a real release): 400.
    fastapi_root_middlewares = [{"middleware": RunConfGuard, "name": "Tars run conf guard"}]
    # Scheduled canaries use it; the scheduler and api-server deserialize it from here.
    timetables = [WindowTimetable]
    # A page to pull / release the brake and read the audit trail, in the UI's navigation.
    # url_route: the UI shows it inside its own layout (an iframe at /plugin/tars-brake).
    external_views = [{"name": "Tars brake", "href": "/tars/ui", "destination": "nav",
                       "category": "browse", "url_route": "tars-brake"},
                      # Every app: versions across hosts, running release, brake, window.
                      {"name": "Tars apps", "href": "/tars/views/apps", "destination": "nav",
                       "category": "browse", "url_route": "tars-apps"},
                      # A tab on every DAG (Airflow cannot limit a tab to some DAGs); on a
                      # DAG that is not a Tars deploy DAG it says so.
                      {"name": "Tars app", "href": "/tars/views/app?dag_id={DAG_ID}",
                       "destination": "dag", "url_route": "tars-app"},
                      # A tab on every run: its stages, hosts and their steps, live.
                      {"name": "Tars release",
                       "href": "/tars/views/run?dag_id={DAG_ID}&run_id={RUN_ID}",
                       "destination": "dag_run", "url_route": "tars-release"}]
