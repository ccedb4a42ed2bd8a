"""A small Airflow of its own under the FAB auth manager, for tests of per-user permissions.

The stack's default (simple) auth manager knows roles only: every viewer may read every DAG.
Per-DAG permissions come from the FAB auth manager, so the ``fab`` fixture starts an Airflow
with FAB (the session sandbox's inventory for the app configs) and stops it at the end, even
on failure. Two apps (``THIS``, ``OTHER``); users: the admin (FAB Admin), ``VIEWER`` who may
read only ``OTHER``'s deploy DAG, and ``READER`` with FAB's built-in Viewer role (reads every
DAG, changes nothing). Tests may add apps (``add_app``) and run releases on the sandbox.
Import the fixture into a test module: ``from tests.e2e.fab import fab  # noqa: F401``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml

from sandbox import Sandbox
from sandbox.airflow_stack import REPO, AirflowStack
from sandbox.localstack import wired_env
from tars_operators.client.api import Airflow
from tests.e2e.harness import demo_config, parse_now
from tests.polling import poll

THIS, OTHER = "perm_this", "perm_other"
VIEWER, VIEWER_PASSWORD = "viewer_other", "viewer-other-pw-1"
READER, READER_PASSWORD = "viewer_all", "viewer-all-pw-1"


class FabStack:
    """A FAB-authenticated Airflow with two apps, a viewer of one of them and a Viewer."""

    def __init__(self, stack: AirflowStack, sandbox: Sandbox, config_dir: Path) -> None:
        self.stack = stack
        self.sandbox = sandbox
        self.config_dir = config_dir
        self.admin = self.token(stack.user, stack.password)
        self.viewer = self.token(VIEWER, VIEWER_PASSWORD)

    def token(self, user: str, password: str) -> str:
        r = httpx.post(f"{self.stack.url}/auth/token", timeout=30,
                       json={"username": user, "password": password})
        assert r.status_code == 201, f"login of {user}: {r.status_code} {r.text}"
        return str(r.json()["access_token"])

    def get(self, token: str, app: str, route: str) -> httpx.Response:
        return httpx.get(f"{self.stack.url}/tars/apps/{app}/{route}", timeout=30,
                         headers={"Authorization": f"Bearer {token}"})

    @property
    def api(self) -> Airflow:
        """Airflow's REST API as the admin."""
        return Airflow(self.stack.url, user=self.stack.user, password=self.stack.password)

    def add_app(self, name: str, **overrides: Any) -> str:
        """A demo variant (``section.key`` overrides) in the config dir; waits for its DAGs."""
        data = demo_config(name, self.sandbox.inventory_path, **overrides)
        (self.config_dir / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        parse_now(self.api)
        try:
            _wait_for_dags(self.stack, [name])
        except AssertionError as exc:
            errors = self.api.request("GET", "/api/v2/importErrors")
            raise AssertionError(f"{exc}; import errors: {errors}") from None
        return f"tars_deploy__{name}"


@pytest.fixture(scope="module")
def fab(sandbox: Sandbox) -> Iterator[FabStack]:
    home = Path(tempfile.mkdtemp(prefix="tars-e2e-fab-"))
    config_dir = home / "configs" / "apps"
    config_dir.mkdir(parents=True)
    shutil.copytree(REPO / "configs" / "templates", config_dir.parent / "templates")
    for app in (THIS, OTHER):
        data = demo_config(app, sandbox.inventory_path)
        (config_dir / f"{app}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    stack = AirflowStack(home=home, parallelism=2, auth_manager="fab")
    stack.extra_env.update(wired_env(sandbox, stack))
    stack.extra_env["TARS_CONFIG_DIR"] = str(config_dir)
    try:
        stack.start()
        _wait_for_dags(stack, [THIS, OTHER])
        # Read on one DAG and its runs: what FAB's per-DAG access control grants a viewer.
        stack.fab_role("viewer_of_other", [("can_read", f"DAG:tars_deploy__{OTHER}"),
                                           ("can_read", f"DAG Run:tars_deploy__{OTHER}")])
        stack.fab_user(VIEWER, VIEWER_PASSWORD, ["viewer_of_other"])
        stack.fab_user(READER, READER_PASSWORD, ["Viewer"])
        yield FabStack(stack, sandbox, config_dir)
    finally:
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)


def _wait_for_dags(stack: AirflowStack, apps: list[str]) -> None:
    """The apps' deploy DAGs parsed, and with them their FAB resources (made by the
    dag-processor)."""
    with stack.client() as client:
        def parsed() -> bool:
            return all(client.get(f"/api/v2/dags/tars_deploy__{app}").status_code == 200
                       for app in apps)
        poll(parsed, 120, f"the deploy DAGs of {', '.join(apps)}", interval=0.5)
