"""Celery settings for the workers that run Tars's tasks.

Every Airflow task on a Celery worker runs in a process forked from one of the worker's pool
processes. What that process has not imported, each task imports again: Airflow's task
runner and supervisor (≈1.2 s in a fresh process) and, through the listener manager that
the task runner asks for before it parses the DAG, every plugin with Tars's web routes
(≈1 s). The LocalExecutor's workers inherit all of this from the scheduler; Celery's did
not, and a task that does nothing took ≈1 s there against ≈0.3 s on the LocalExecutor.

``CELERY_CONFIG`` is Airflow's own Celery configuration plus one module the worker's main
process imports before it forks its pool (Celery's ``imports``): this one, which loads the
task runner and the plugins once. Set it with
``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=tars_operators.celery_worker.CELERY_CONFIG`` on every
Celery component (the scheduler's executor builds the same app to send tasks).

Like the LocalExecutor's scheduler, a worker then runs the Tars code it started with until it
is restarted: restart workers when Tars is upgraded (docs/production.md, "Upgrades").
"""

from __future__ import annotations

import gc
import logging
import time

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

CELERY_CONFIG = {
    **DEFAULT_CELERY_CONFIG,
    "imports": (*DEFAULT_CELERY_CONFIG.get("imports", ()), __name__),
}


def preload() -> float:
    """Import what every task process needs; returns the seconds it took."""
    started = time.monotonic()
    import airflow.sdk.execution_time.supervisor  # noqa: F401
    import airflow.sdk.execution_time.task_runner  # noqa: F401
    from airflow.sdk.listener import get_listener_manager

    get_listener_manager()  # cached: loads the plugins (Tars's among them) in this process
    # Objects made so far are never freed: the forked pool processes share their pages
    # instead of copying them when the collector would touch them (Airflow does the same).
    gc.freeze()
    return time.monotonic() - started


def _worker_preload(**_: object) -> None:
    # Sent in a Celery worker's main process before it starts its pool, never in the scheduler
    # (its executor imports this module too, for CELERY_CONFIG, and loads nothing more).
    took = preload()
    log.info("tars: task runner and plugins preloaded in this worker in %.2f s "
             "(its tasks do not import them again)", took)


worker_init.connect(_worker_preload, weak=False)
