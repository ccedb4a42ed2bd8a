"""Tars's own modules, imported once in the process that task processes fork from.

A task process is forked from a process that has already loaded the plugins: the
LocalExecutor's workers fork from the scheduler after its job loads them (the listener
manager), a Celery pool process from the worker that ran ``celery_worker.preload``. What that
process has imported, no task imports again; what it has not, every task imports anew:
the DAG factory, the operators, paramiko and the step modules the host chain imports lazily
(≈0.25 CPU-s a task, ≈4 CPU-s in a 200-host release; ``bench/release.py``).

``tars_plugin`` calls ``load()``, so every process that loads the plugins (the api-server and
the dag-processor too) imports them once. A module that fails to import is logged and skipped:
the plugin (the REST routes, the views) must load whatever a task module needs.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil

log = logging.getLogger(__name__)

# Never imported here: the Celery settings (they hook Celery's signals; Celery's workers
# import them themselves).
SKIPPED = ("tars_operators.celery_worker",)


def modules() -> list[str]:
    """Every module of the package except ``SKIPPED``, packages before their modules."""
    import tars_operators

    found = [m.name for m in pkgutil.walk_packages(tars_operators.__path__, "tars_operators.")]
    return [name for name in found
            if not any(name == s or name.startswith(s + ".") for s in SKIPPED)]


def load() -> list[str]:
    """Import ``modules()``; returns the names that failed (each one logged)."""
    failed = []
    for name in modules():
        try:
            importlib.import_module(name)
        except Exception as exc:  # the plugin must load; the task that needs it will say why
            log.warning("tars: %s not preloaded: %s: %s", name, type(exc).__name__, exc)
            failed.append(name)
    return failed
