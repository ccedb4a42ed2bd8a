"""The Celery settings Tars's workers run with (tars_operators/celery_worker.py).

Each check runs in a fresh interpreter: what a process has imported is the point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]


def _python(code: str) -> str:
    env = {**os.environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PYTHONPATH": os.pathsep.join((str(REPO / "plugins"), str(REPO)))}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]  # Airflow logs to stdout too: the last line


def test_the_config_is_airflows_own_plus_the_preload_module() -> None:
    out = _python(
        "from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG\n"
        "from tars_operators.celery_worker import CELERY_CONFIG\n"
        "extra = {k: v for k, v in CELERY_CONFIG.items() if DEFAULT_CELERY_CONFIG.get(k) != v}\n"
        "print(sorted(extra.items()))\n")
    assert out.strip() == "[('imports', ('tars_operators.celery_worker',))]"


def test_importing_it_loads_nothing_more_a_scheduler_imports_it_too() -> None:
    out = _python("import sys, tars_operators.celery_worker\n"
                  "from airflow.sdk.plugins_manager import _get_plugins\n"
                  "print('tars_plugin' in sys.modules, _get_plugins.cache_info().currsize)\n")
    assert out.split() == ["False", "0"]


def test_a_worker_starting_preloads_the_task_runner_and_the_plugins() -> None:
    # What Celery does in a worker's main process before it forks the pool.
    out = _python("import sys\n"
                  "from celery.signals import worker_init\n"
                  "import tars_operators.celery_worker\n"
                  "worker_init.send(sender=None)\n"
                  "from airflow.sdk.plugins_manager import _get_plugins\n"
                  "print(_get_plugins.cache_info().currsize,"
                  " sorted(p.name for p in _get_plugins()[0]),"
                  " 'airflow.sdk.execution_time.task_runner' in sys.modules)\n")
    assert out.split() == ["1", "['tars']", "True"], out
