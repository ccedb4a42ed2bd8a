"""The Apps, App and Release views in a real headless Chromium against the real api-server (issue 13).

After a real release of 2.0.0 on the sandbox (10 hosts): the Apps view (nav "Tars apps") lists
the app with ``2.0.0 ×10``; the App tab on its deploy DAG (inside Airflow's layout) shows 2.0.0
on every host, with the version before it, and the run in the history with who, reason and
ticket; a reason holding ``<script>`` shows as text and runs nothing. The host state comes from
what the release recorded in Airflow's database, not from the hosts. Screenshots of both views
are saved to docs/img/ (linked from the README). While a release runs, its Release tab shows
hosts done while others still wait, then every host's steps.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from tests import polling
from tests.e2e.browser import chromium, console, log_in, open_alert, open_in_airflow, wait_text
from tests.e2e.harness import E2E

pytestmark = pytest.mark.e2e

APP = "viewsapp"
VERSION = "2.0.0"
REASON = "<script>window.__pwned=1</script> views e2e"
TICKET = "OPS-13"  # tickets are pattern-checked by the form; reasons are free text
IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def ready(driver: WebDriver) -> None:
    polling.poll(lambda: driver.execute_script("return document.body.dataset.ready"), 30,
                 "the view's script to run")


def texts(driver: WebDriver, css: str) -> list[str]:
    """The text of every element matching ``css``, read at once (the views re-render)."""
    return list(driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)", css))


def frame_with(driver: WebDriver, src: str) -> WebElement | None:
    """The iframe showing ``src`` (None while Airflow's UI is still rendering it)."""
    try:
        return next((f for f in driver.find_elements(By.TAG_NAME, "iframe")
                     if f.get_attribute("src") == src), None)
    except StaleElementReferenceException:
        return None


def assert_nothing_ran(driver: WebDriver) -> None:
    assert open_alert(driver) is None
    assert driver.execute_script("return window.__pwned") is None
    assert driver.execute_script("return document.querySelectorAll('main script, main b').length") == 0
    assert [e["message"] for e in console(driver)
            if "Content Security Policy" in e["message"]] == []


def test_views_show_the_release_on_every_host_and_its_history(e2e: E2E) -> None:
    dag_id = e2e.add_app(APP)
    url, api = e2e.stack.url, e2e.api
    hosts = [h.name for h in e2e.sandbox.hosts]
    # Nothing recorded yet: the views do not guess (the fleet runs 1.0.0, put there by hand).
    before = api.request("GET", f"/tars/apps/{APP}/fleet")
    assert before["summary"]["versions_text"] == f"unknown ×{len(hosts)}"

    run = e2e.release(dag_id, {"version": VERSION, "reason": REASON, "ticket": TICKET})
    assert run["state"] == "success", run.get("note")
    assert e2e.versions() == {h: VERSION for h in hosts}
    IMG.mkdir(parents=True, exist_ok=True)

    with chromium() as driver:
        log_in(driver, url, e2e.stack.token())
        # The nav entry "Tars apps": Airflow's layout around the view's iframe.
        open_in_airflow(driver, f"{url}/plugin/tars-apps", f"{url}/tars/views/apps", "the Apps view")
        ready(driver)
        row = f"tr[data-app='{APP}']"
        polling.poll(lambda: texts(driver, f"{row} .versions") == [f"{VERSION} ×{len(hosts)}"], 30,
                     f"the Apps view to list {APP} on {VERSION} ×{len(hosts)}")
        assert texts(driver, f"{row} .brake") == ["off"]
        assert texts(driver, f"{row} .running") == ["—"]
        assert texts(driver, f"{row} .last")[0].startswith(f"{VERSION}: succeeded ")
        assert texts(driver, f"{row} .window") == ["open"]  # the demo app has no windows
        assert texts(driver, f"{row} .canary") == ["—"]  # nor a canary schedule
        driver.switch_to.default_content()
        driver.save_screenshot(str(IMG / "tars-apps.png"))
        assert_nothing_ran(driver)

        # The app's name leads to the tab on its deploy DAG, inside Airflow's UI.
        driver.switch_to.frame(driver.find_element(By.TAG_NAME, "iframe"))
        driver.find_element(By.CSS_SELECTOR, f"{row} a").click()
        driver.switch_to.default_content()
        polling.poll(lambda: driver.current_url == f"{url}/dags/{dag_id}/plugin/tars-app", 15,
                     "the app's link to open its tab")
        src = f"{url}/tars/views/app?dag_id={dag_id}"
        frame = polling.poll(lambda: frame_with(driver, src), 30, "Airflow's UI to embed the App tab")
        driver.switch_to.frame(frame)
        ready(driver)
        wait_text(driver, "state", f"{len(hosts)} host(s)", timeout=30)
        shown = {tr.get_attribute("data-host"): tr.find_element(By.CSS_SELECTOR, ".version").text
                 for tr in driver.find_elements(By.CSS_SELECTOR, "#hosts tbody tr")}
        assert shown == {h: VERSION for h in hosts}
        first = driver.find_element(By.CSS_SELECTOR, f"#hosts tr[data-host='{hosts[0]}']")
        cells = [td.text for td in first.find_elements(By.TAG_NAME, "td")]
        # The version before (from the release's activate step), the last step and its result.
        assert cells[2:6] == [VERSION, "1.0.0", "prune", "ok"], cells

        history = driver.find_element(By.CSS_SELECTOR, f"#history tr[data-run='{run['dag_run_id']}']")
        cells = [td.text for td in history.find_elements(By.TAG_NAME, "td")]
        assert cells[:7] == [run["dag_run_id"], "deploy", VERSION, "admin", REASON, TICKET,
                             "succeeded"], cells
        run_page = f"{url}/dags/{dag_id}/runs/{run['dag_run_id']}"
        link = history.find_element(By.TAG_NAME, "a")
        assert unquote(link.get_attribute("href") or "") == run_page
        driver.switch_to.default_content()
        driver.set_window_size(1280, 1500)  # room for the history under the hosts
        driver.save_screenshot(str(IMG / "tars-app.png"))
        assert_nothing_ran(driver)
        # The run link opens the run in Airflow's own page (the whole window, not the tab).
        driver.switch_to.frame(driver.find_element(By.TAG_NAME, "iframe"))
        driver.find_element(By.CSS_SELECTOR, f"#history tr[data-run='{run['dag_run_id']}'] a").click()
        driver.switch_to.default_content()
        polling.poll(lambda: unquote(driver.current_url) == run_page, 15, "the run's page to open")

        # A DAG that is not a Tars deploy DAG gets the tab too; it says so and asks nothing.
        driver.get(f"{url}/tars/views/app?dag_id=not_tars")
        ready(driver)
        wait_text(driver, "state", "not a Tars deploy DAG")


def test_fleet_route_refuses_unknown_and_malformed_apps(e2e_stack: E2E) -> None:
    import httpx

    cookies = {"_token": e2e_stack.stack.token()}
    base = f"{e2e_stack.stack.url}/tars/apps"
    assert httpx.get(f"{base}/nosuchapp/fleet", cookies=cookies, timeout=30).status_code == 404
    assert httpx.get(f"{base}/Bad-Name/fleet", cookies=cookies, timeout=30).status_code == 400
    assert httpx.get(f"{base}/demo/fleet", timeout=30).status_code == 401


def test_release_tab_shows_hosts_moving_through_their_steps(e2e: E2E) -> None:
    dag_id = e2e.add_app(APP)
    url, api = e2e.stack.url, e2e.api
    hosts = [h.name for h in e2e.sandbox.hosts]
    run = api.trigger(dag_id, {"version": "2.1.0", "reason": "views e2e: live"})
    run_id = run["dag_run_id"]
    seen: set[tuple[str, ...]] = set()
    with chromium() as driver:
        log_in(driver, url, e2e.stack.token())
        driver.get(f"{url}/dags/{dag_id}/runs/{quote(run_id, safe='')}/plugin/tars-release")
        src = f"{url}/tars/views/run?dag_id={dag_id}&run_id={quote(run_id, safe='')}"
        frame = polling.poll(lambda: frame_with(driver, src) or frame_with(
            driver, f"{url}/tars/views/run?dag_id={dag_id}&run_id={run_id}"), 30,
            "Airflow's UI to embed the Release tab")
        driver.switch_to.frame(frame)
        ready(driver)

        def finished() -> bool:
            states = tuple(texts(driver, "#hosts tbody td.task"))
            if states:
                seen.add(states)
            return driver.execute_script("return document.getElementById('state').dataset.state") \
                in ("success", "failed")

        polling.poll(finished, 300, "the run to end in the Release tab", interval=0.2)
        # The page showed the hosts part done: some finished while others still waited.
        assert any("success" in s and "pending" in s for s in seen), seen
        rows = {tr.get_attribute("data-host"): tr for tr in
                driver.find_elements(By.CSS_SELECTOR, "#hosts tbody tr")}
        assert sorted(rows) == sorted(hosts)
        assert all(tr.find_element(By.CSS_SELECTOR, "td.task").text == "success"
                   for tr in rows.values())
        # Each host's phase as release/machine left it when its task ended.
        assert {tr.find_element(By.CSS_SELECTOR, "td.phase").text for tr in rows.values()} \
            == {"in rotation"}
        steps = rows[hosts[0]].find_elements(By.CSS_SELECTOR, ".steps li")
        assert [s.text.split()[0] for s in steps][:1] == ["stage"], [s.text for s in steps]
        assert any(s.text.startswith("activate ok") and "→ 2.1.0" in s.text for s in steps)
        assert wait_text(driver, "state", "succeeded")
        assert "Reason\nviews e2e: live" in driver.find_element(By.ID, "summary").text
        driver.switch_to.default_content()
        driver.set_window_size(1280, 1500)
        driver.save_screenshot(str(IMG / "tars-release.png"))
        assert_nothing_ran(driver)


def test_app_tab_pulls_and_releases_the_brake_and_the_audit_shows_who_and_why(
        e2e_stack: E2E) -> None:
    dag_id = e2e_stack.add_app(APP)
    url, api = e2e_stack.stack.url, e2e_stack.api
    why = "<img src=x onerror=alert(1)> bad canary"
    try:
        with chromium() as driver:
            log_in(driver, url, e2e_stack.stack.token())
            driver.get(f"{url}/tars/views/app?dag_id={dag_id}")
            ready(driver)
            polling.poll(lambda: driver.find_element(By.ID, "brake").is_displayed(), 15,
                         "the brake form (admin may edit the app's runs)")
            driver.find_element(By.ID, "reason").send_keys(why)
            driver.find_element(By.ID, "pull-button").click()
            wait_text(driver, "summary", f": {why}")
            assert "ON (hold) by admin" in driver.find_element(By.ID, "summary").text
            assert api.request("GET", f"/tars/apps/{APP}/brake")["brake"]["reason"] == why
            polling.poll(lambda: texts(driver, "#audit tbody tr")[:1] and texts(
                driver, "#audit tbody tr")[0].endswith(f"brake pulled\tadmin\t{why}"), 15,
                "the audit trail to show who pulled the brake and why")

            driver.find_element(By.ID, "reason").send_keys("canary fine")
            driver.find_element(By.ID, "release-button").click()
            polling.poll(lambda: "Brake\noff" in driver.find_element(By.ID, "summary").text, 15,
                         "the summary to show the brake off")
            assert api.request("GET", f"/tars/apps/{APP}/brake")["brake"] is None
            polling.poll(lambda: texts(driver, "#audit tbody tr")[0].endswith(
                "brake released\tadmin\tcanary fine"), 15, "the audit trail to show the release")
            assert_nothing_ran(driver)
            assert driver.execute_script("return document.images.length") == 0
    finally:
        api.request("DELETE", f"/tars/apps/{APP}/brake", params={"reason": "test done"})
