"""The App tab's host truth in a real headless Chromium against the real api-server (issue 13).

After a real release of 2.0.0 on the sandbox, three hosts are changed behind Tars's back:
one's ``current`` link is switched back to 1.0.0 by hand, one is put in MAINT through
HAProxy's runtime API, one's SSH is blocked. Without any refresh the LB column already shows
the MAINT host live (the api-server reads the local HAProxy socket). "Refresh from hosts"
starts a run of ``tars_inspect__<app>``; the page follows it and then shows what every host
runs, the host switched by hand standing out against what Tars recorded, the release left
on disk (1.0.0), and why the blocked host could not be read.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests import polling
from tests.e2e.browser import chromium, log_in, wait_text
from tests.e2e.harness import E2E
from tests.e2e.test_browser_views import assert_nothing_ran, ready, texts

pytestmark = pytest.mark.e2e

APP = "refreshapp"
VERSION = "2.0.0"
IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def cells(driver: WebDriver, host: str) -> dict[str, str]:
    """The host row's cells by column header (read at once: the page re-renders)."""
    return dict(driver.execute_script(
        "const heads = [...document.querySelectorAll('#hosts thead th')].map(t => t.innerText);"
        "const row = document.querySelector(`#hosts tr[data-host='${arguments[0]}']`);"
        "return row ? [...row.cells].map((c, i) => [heads[i], c.innerText]) : [];", host))


def point_current(deploy_root: str, version: str) -> None:
    """Switch the host's ``current`` link by hand, as Tars does (new link + rename)."""
    tmp = Path(deploy_root) / ".current.by-hand"
    tmp.unlink(missing_ok=True)
    os.symlink(f"releases/{version}", tmp)
    os.replace(tmp, Path(deploy_root) / "current")


def test_refresh_from_hosts_shows_what_each_host_runs_and_the_lb_live(e2e: E2E) -> None:
    dag_id = e2e.add_app(APP)
    e2e.wait_dag(f"tars_inspect__{APP}")
    sandbox, url, api = e2e.sandbox, e2e.stack.url, e2e.api
    hosts = [h.name for h in sandbox.hosts]
    by_hand, maint, blocked = hosts[1], hosts[2], hosts[3]
    run = e2e.release(dag_id, {"version": VERSION, "reason": "refresh e2e", "ticket": "OPS-13"})
    assert run["state"] == "success", run.get("note")
    backend = sandbox.haproxy_backend
    try:
        point_current(sandbox.host(by_hand).deploy_root, "1.0.0")
        assert sandbox.haproxy(f"set server {backend}/{maint} state maint").strip() == ""
        sandbox.block_ssh(blocked)
        with chromium() as driver:
            log_in(driver, url, e2e.stack.token())
            driver.get(f"{url}/tars/views/app?dag_id={dag_id}")
            ready(driver)
            wait_text(driver, "state", f"{len(hosts)} host(s)", timeout=30)
            # Live from the LB before any refresh: no SSH login, nothing read from the hosts.
            assert "live from haproxy backend" in driver.find_element(By.ID, "lb-note").text
            assert cells(driver, maint)["LB state"] == "MAINT live"
            assert cells(driver, hosts[0])["LB state"] == "UP live"
            assert cells(driver, hosts[0])["On host"] == "not read yet"
            assert "never refreshed" in driver.find_element(By.ID, "refresh-state").text

            driver.find_element(By.ID, "refresh-button").click()
            wait_text(driver, "refresh-state", "refreshing from the hosts", timeout=15)
            wait_text(driver, "refresh-state", "hosts read at", timeout=120)
            runs = api.request("GET", f"/api/v2/dags/tars_inspect__{APP}/dagRuns")["dag_runs"]
            assert [r["state"] for r in runs] == ["success"]
            assert runs[0]["triggering_user_name"] == "admin"

            rows = {h: cells(driver, h) for h in hosts}
            for h in hosts:
                assert rows[h]["Version"] == VERSION, rows[h]  # what Tars recorded stays
            for h in set(hosts) - {by_hand, blocked}:
                assert rows[h]["On host"] == f"{VERSION} (good)", rows[h]
                assert "1.0.0 (good)" in rows[h]["Other releases"], rows[h]
            assert rows[by_hand]["On host"] == f"1.0.0 (good) ≠ recorded {VERSION}"
            assert "differs" in (driver.find_element(
                By.CSS_SELECTOR, f"#hosts tr[data-host='{by_hand}']").get_attribute("class") or "")
            assert rows[blocked]["On host"].startswith("not read: inspect: cannot connect"), rows[blocked]
            assert "refused" in rows[blocked]["On host"].lower(), rows[blocked]
            # The LB column stays live; hosts in rotation read UP.
            assert rows[maint]["LB state"] == "MAINT live"
            assert rows[hosts[0]]["LB state"] == "UP live"
            assert rows[hosts[0]]["Datacenter / group"] in ("dc1", "dc2")
            driver.set_window_size(1600, 1500)
            driver.save_screenshot(str(IMG / "tars-app-refresh.png"))
            assert_nothing_ran(driver)
            assert texts(driver, "#hosts tbody tr") and len(texts(driver, "#hosts tbody tr")) == len(hosts)
    finally:
        sandbox.unblock_ssh(blocked)
        sandbox.haproxy(f"set server {backend}/{maint} state ready")
        point_current(sandbox.host(by_hand).deploy_root, VERSION)
        polling.poll(lambda: sandbox.server_states().get(maint) == "UP", 30, f"{maint} UP again")


def test_refresh_route_refuses_without_login_and_for_unknown_apps(e2e_stack: E2E) -> None:
    import httpx

    cookies = {"_token": e2e_stack.stack.token()}
    base = f"{e2e_stack.stack.url}/tars/apps"
    assert httpx.post(f"{base}/demo/refresh", timeout=30).status_code == 401
    assert httpx.post(f"{base}/nosuchapp/refresh", cookies=cookies, timeout=30).status_code == 404
    assert httpx.post(f"{base}/Bad-Name/refresh", cookies=cookies, timeout=30).status_code == 400
