"""Per-app permissions on Tars's read routes, under the FAB auth manager (issue 12, test 5).

Per-DAG permissions come from the FAB auth manager: this module starts the small FAB Airflow of
``tests/e2e/fab.py`` (no release runs). A user who may read only another app's deploy DAG gets
403 on this app's brake, audit trail and plan, and 200 on its own app.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.fab import OTHER, THIS, VIEWER, FabStack, fab  # noqa: F401 - the fixture
from tests.e2e.harness import E2E

pytestmark = pytest.mark.e2e

READ_ROUTES = ("brake", "audit", "plan", "fleet")


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


def test_the_viewer_may_not_refresh_its_app_from_the_hosts(fab: FabStack) -> None:
    r = httpx.post(f"{fab.stack.url}/tars/apps/{OTHER}/refresh", timeout=30,
                   headers={"Authorization": f"Bearer {fab.viewer}"})
    assert r.status_code == 403
    assert r.json()["detail"].startswith(f"{VIEWER} may not change releases of {OTHER}: ")
    runs = httpx.get(f"{fab.stack.url}/api/v2/dags/tars_inspect__{OTHER}/dagRuns", timeout=30,
                     headers={"Authorization": f"Bearer {fab.admin}"})
    assert runs.status_code == 200 and runs.json()["total_entries"] == 0, runs.text


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
