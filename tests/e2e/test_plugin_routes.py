"""The plugin's REST routes and brake page inside the real api-server: all need a user."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.harness import E2E

pytestmark = pytest.mark.e2e

ROUTES = [("GET", "/tars/ui"), ("GET", "/tars/apps/demo/brake"),
          ("POST", "/tars/apps/demo/brake"), ("DELETE", "/tars/apps/demo/brake"),
          ("GET", "/tars/apps/demo/audit"), ("GET", "/tars/apps/demo/plan"),
          ("GET", "/tars/static/brake.js")]


@pytest.mark.parametrize("method,path", ROUTES)
def test_every_route_refuses_anonymous_callers(e2e_stack: E2E, method: str, path: str) -> None:
    r = httpx.request(method, e2e_stack.stack.url + path, json={"reason": "x"}, timeout=30)
    assert r.status_code in (401, 403), f"{method} {path} answered {r.status_code} without a user"


def test_brake_page_is_served_to_a_user_and_linked_in_the_ui(e2e_stack: E2E) -> None:
    api = e2e_stack.api
    token = api._auth()["Authorization"]
    r = httpx.get(e2e_stack.stack.url + "/tars/ui", headers={"Authorization": token}, timeout=30)
    assert r.status_code == 200 and "Pull the brake" in r.text
    # The browser sends the Airflow session cookie instead of a header: that works too.
    r = httpx.get(e2e_stack.stack.url + "/tars/ui", timeout=30,
                  cookies={"_token": token.split(" ", 1)[1]})
    assert r.status_code == 200
    plugins = api.request("GET", "/api/v2/plugins")["plugins"]
    tars = next(p for p in plugins if p["name"] == "tars")
    assert any(v["href"] == "/tars/ui" for v in tars["external_views"])
