"""Per-app permissions on Tars's read routes, under the FAB auth manager (issue 12, test 5).

The stack's default (simple) auth manager knows roles only: every viewer may read every DAG.
Per-DAG permissions come from the FAB auth manager, so this module starts a small Airflow of
its own with FAB (the session sandbox's inventory for the app configs; no release runs) and
stops it at the end. A user who may read only another app's deploy DAG gets 403 on this
app's brake, audit trail and plan, and 200 on its own app.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml

from sandbox import Sandbox
from sandbox.airflow_stack import REPO, AirflowStack
from sandbox.localstack import wired_env
from tests.e2e.harness import E2E, demo_config
from tests.polling import poll

pytestmark = pytest.mark.e2e

THIS, OTHER = "perm_this", "perm_other"
READ_ROUTES = ("brake", "audit", "plan", "fleet")
VIEWER, VIEWER_PASSWORD = "viewer_other", "viewer-other-pw-1"


class FabStack:
    """A FAB-authenticated Airflow with two apps and a viewer of one of them."""

    def __init__(self, stack: AirflowStack) -> None:
        self.stack = stack
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
        _wait_for_dags(stack)
        # Read on one DAG and its runs: what FAB's per-DAG access control grants a viewer.
        stack.fab_role("viewer_of_other", [("can_read", f"DAG:tars_deploy__{OTHER}"),
                                           ("can_read", f"DAG Run:tars_deploy__{OTHER}")])
        stack.fab_user(VIEWER, VIEWER_PASSWORD, ["viewer_of_other"])
        yield FabStack(stack)
    finally:
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)


def _wait_for_dags(stack: AirflowStack) -> None:
    """Both deploy DAGs parsed, and with them their FAB resources (made by the dag-processor)."""
    with stack.client() as client:
        def parsed() -> bool:
            return all(client.get(f"/api/v2/dags/tars_deploy__{app}").status_code == 200
                       for app in (THIS, OTHER))
        poll(parsed, 120, "the deploy DAGs of both apps", interval=0.5)


@pytest.mark.parametrize("route", READ_ROUTES)
def test_a_viewer_of_another_app_cannot_read_this_apps_route(fab: FabStack, route: str) -> None:
    r = fab.get(fab.viewer, THIS, route)
    assert r.status_code == 403, f"{route}: {r.status_code} {r.text}"
    assert r.json()["detail"] == (
        f"{VIEWER} may not read releases of {THIS}: "
        f"that needs read permission on the runs of DAG tars_deploy__{THIS}")


@pytest.mark.parametrize("route", READ_ROUTES)
def test_the_viewer_reads_its_own_app_and_an_admin_reads_both(fab: FabStack, route: str) -> None:
    for token, app in ((fab.viewer, OTHER), (fab.admin, OTHER), (fab.admin, THIS)):
        r = fab.get(token, app, route)
        assert r.status_code == 200, f"{route} of {app}: {r.status_code} {r.text}"
    plan = fab.get(fab.viewer, OTHER, "plan").json()
    assert plan["dag_id"] == f"tars_deploy__{OTHER}" and plan["plan"]["stages"]


def test_the_apps_view_lists_only_the_apps_a_user_may_read(fab: FabStack) -> None:
    def listed(token: str) -> list[str]:
        r = httpx.get(f"{fab.stack.url}/tars/apps", timeout=30,
                      headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return [row["app"] for row in r.json()["apps"]]

    assert listed(fab.viewer) == [OTHER]
    assert listed(fab.admin) == sorted([OTHER, THIS])
    # The App view offers the brake only to who may pull it.
    assert fab.get(fab.viewer, OTHER, "fleet").json()["can_edit"] is False
    assert fab.get(fab.admin, OTHER, "fleet").json()["can_edit"] is True


def test_the_viewer_may_read_but_not_pull_the_brake_of_its_own_app(fab: FabStack) -> None:
    r = httpx.post(f"{fab.stack.url}/tars/apps/{OTHER}/brake", timeout=30,
                   headers={"Authorization": f"Bearer {fab.viewer}"}, json={"reason": "no"})
    assert r.status_code == 403
    assert r.json()["detail"].startswith(f"{VIEWER} may not change releases of {OTHER}: ")
    assert fab.get(fab.admin, OTHER, "brake").json()["brake"] is None


@pytest.mark.parametrize("route", READ_ROUTES)
def test_an_unknown_app_is_404_from_the_dag_lookup(fab: FabStack, route: str) -> None:
    started = time.monotonic()
    r = fab.get(fab.admin, "perm_nope", route)
    took = time.monotonic() - started
    assert r.status_code == 404, f"{route}: {r.status_code} {r.text}"
    assert r.json()["detail"].startswith("no app 'perm_nope': Airflow has no DAG "
                                         "tars_deploy__perm_nope")
    assert took < 5, f"{route} of an unknown app took {took:.1f}s"
    # Someone who may not read it learns nothing about whether it exists.
    assert fab.get(fab.viewer, "perm_nope", route).status_code == 403


# ---- the session stack (simple auth manager, admin user) ---------------------------------


@pytest.mark.parametrize("method,route", [("GET", "brake"), ("GET", "audit"), ("GET", "plan"),
                                          ("POST", "brake"), ("DELETE", "brake")])
def test_an_unknown_app_is_404_under_the_default_stack_too(e2e_stack: E2E, method: str,
                                                           route: str) -> None:
    api = e2e_stack.api
    r = httpx.request(method, f"{e2e_stack.stack.url}/tars/apps/never_configured/{route}",
                      headers=api._auth(), json={"reason": "x"}, timeout=30)
    assert r.status_code == 404, f"{method} {route}: {r.status_code} {r.text}"
    assert "Airflow has no DAG tars_deploy__never_configured" in r.json()["detail"]
    # The brake of an app that does not exist is never stored.
    keys = [v["key"] for v in api.request("GET", "/api/v2/variables",
                                          params={"limit": 1000})["variables"]]
    assert not [k for k in keys if "never_configured" in k], keys
