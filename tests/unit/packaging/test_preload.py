"""What loading the Tars plugin imports (tars_operators/preload.py): every task process forks
from a process that loaded it, so a module imported there is one no task imports again."""

from __future__ import annotations

import logging

import pytest

from tests.unit.packaging.test_celery_worker import _python

pytestmark = pytest.mark.unit


def test_loading_the_plugin_imports_what_a_release_task_imports() -> None:
    # In a fresh interpreter, as the scheduler loads it: the DAG file's factory, the operators,
    # paramiko and the steps the host chain imports lazily are there before any task starts.
    out = _python(
        "import sys\n"
        "from airflow.sdk.plugins_manager import _get_plugins\n"
        "_get_plugins()\n"
        "wanted = ['tars_operators.factory.entry', 'tars_operators.operators.release_host',\n"
        "          'tars_operators.operators.finalize', 'tars_operators.release.hostflow',\n"
        "          'tars_operators.steps.activate', 'tars_operators.steps.stage',\n"
        "          'tars_operators.hooks.lb.haproxy', 'tars_operators.release.batch',\n"
        "          'paramiko', 'httpx', 'jinja2']\n"
        "print([m for m in wanted if m not in sys.modules],"
        " [m for m in ('tars_operators.celery_worker', 'celery')"
        " if m in sys.modules])\n")
    assert out == "[] []", out


def test_a_module_that_fails_to_import_is_named_and_the_rest_still_load(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from tars_operators import preload

    monkeypatch.setattr(preload, "modules",
                        lambda: ["tars_operators.no_such_module", "tars_operators.errors"])
    with caplog.at_level(logging.WARNING, logger=preload.__name__):
        assert preload.load() == ["tars_operators.no_such_module"]
    assert "tars_operators.no_such_module not preloaded: ModuleNotFoundError" in caplog.text


def test_every_module_of_the_package_is_listed_but_the_celery_settings() -> None:
    from tars_operators import preload

    names = preload.modules()
    assert "tars_operators.hooks.ssh" in names and "tars_operators.web.pages" in names
    assert "tars_operators.cli" in names and "tars_operators.celery_worker" not in names
    assert len(names) == len(set(names)) > 100
