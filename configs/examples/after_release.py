"""An example DAG scheduled on Tars releases: it runs after each finished release of ``demo``.

Every release run of Tars ends by updating the Airflow Asset ``tars://<app>`` (success, failure
or rolled back; not a dry run nor a release refused before its plan), with the extra
``{"version", "hosts", "outcome", "run_id", "dag_id"}``; ``outcome`` is ``success``,
``failure`` or ``rolled_back``. Copy this file into your dags folder, set ``APP``, and put your
own work (integration tests, cache warmers) in place of ``warm_caches``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.sdk import Asset, dag, task
from airflow.sdk.exceptions import AirflowSkipException

APP = "demo"
RELEASES = Asset(f"tars://{APP}")


@dag(dag_id=f"after_release__{APP}", schedule=[RELEASES], catchup=False,
     start_date=datetime(2024, 1, 1, tzinfo=timezone.utc), tags=["tars", "example"])
def after_release() -> None:
    @task
    def read_release(triggering_asset_events: Any = None) -> dict[str, Any]:
        """The release that triggered this run (the latest, if several ended meanwhile)."""
        events = triggering_asset_events[RELEASES]
        release = dict(events[-1].extra)
        print(f"{APP} {release['version']}: {release['outcome']} on "
              f"{len(release['hosts'])} host(s) (run {release['run_id']})")
        return release

    @task
    def warm_caches(release: dict[str, Any]) -> list[str]:
        """Your work after a good release; skipped after a failed or rolled-back one."""
        if release["outcome"] != "success":
            raise AirflowSkipException(f"{release['version']}: {release['outcome']}; nothing to do")
        return [f"warmed {host}" for host in release["hosts"]]

    warm_caches(read_release())


after_release()
