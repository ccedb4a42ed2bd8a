"""The brake page in a real headless Chromium against the real api-server (issue 12, test 3).

A reason is data: ``<img src=x onerror=alert(1)>`` and ``<script>window.__pwned=1</script>``
pulled as brake reasons show as typed text, no dialog opens, no script runs, no element is made
from them; the page's own buttons still pull and release the brake; Airflow's UI (same origin)
shows the page in its iframe while another origin may not frame it. Logged in with the
Airflow session cookie (``_token`` = the JWT of ``POST /auth/token``), as the login form does.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select

from tars_operators.web.pages import CSP
from tests import polling
from tests.e2e.browser import chromium, console, log_in, open_alert, open_in_airflow, wait_text
from tests.e2e.harness import E2E

pytestmark = pytest.mark.e2e

APP = "brakepage"
IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>window.__pwned=1</script>"


@pytest.fixture(scope="module")
def app(e2e_stack: E2E) -> Iterator[str]:
    """An app with a deploy DAG (the brake routes answer 404 for others); brake off after."""
    e2e_stack.add_app(APP)
    try:
        yield APP
    finally:
        e2e_stack.api.request("DELETE", f"/tars/apps/{APP}/brake", params={"reason": "test done"})


def open_page(driver: WebDriver, url: str) -> None:
    driver.get(url)
    polling.poll(lambda: driver.execute_script("return document.body.dataset.ready"), 15,
                 "the page's script to load")


def csp_violations(entries: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in entries if "Content Security Policy" in e["message"]]


def test_hostile_brake_reasons_show_as_text_and_the_buttons_work(e2e_stack: E2E, app: str) -> None:
    url, api = e2e_stack.stack.url, e2e_stack.api
    api.request("POST", f"/tars/apps/{app}/brake", json={"reason": IMG, "action": "hold"})
    with chromium() as driver:
        log_in(driver, url, e2e_stack.stack.token())
        open_page(driver, f"{url}/tars/ui")
        driver.find_element(By.ID, "app").send_keys(app)
        driver.find_element(By.CSS_SELECTOR, "#show button").click()
        state = wait_text(driver, "state", "brake ON")
        assert state.endswith(f"(hold) by admin at {api_brake(e2e_stack, app)['at']}: {IMG}")

        # The second hostile reason goes in through the page's own form, typed like a user.
        driver.find_element(By.ID, "reason").send_keys(SCRIPT)
        Select(driver.find_element(By.ID, "action")).select_by_visible_text("rollback")
        driver.find_element(By.ID, "pull-button").click()
        state = wait_text(driver, "state", SCRIPT)
        assert "brake ON (rollback) by admin" in state
        assert api_brake(e2e_stack, app)["reason"] == SCRIPT
        rows = [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#audit tbody tr")]
        assert rows[0].endswith(f"brake pulled admin {SCRIPT}")
        assert rows[1].endswith(f"brake pulled admin {IMG}")

        assert open_alert(driver) is None
        assert driver.execute_script("return window.__pwned") is None
        assert driver.execute_script("return document.images.length") == 0
        assert driver.execute_script("return [...document.scripts].map(s => s.src)") == [
            f"{url}/tars/static/brake.js"]
        # The reasons are text nodes, not markup: no element holding one has an element child.
        assert driver.execute_script(
            "return [...document.querySelectorAll('.reason')].every(e => !e.children.length)")
        assert csp_violations(console(driver)) == []

        driver.find_element(By.ID, "reason").send_keys("all clear")
        driver.find_element(By.ID, "release-button").click()
        wait_text(driver, "state", "brake off")
        assert api_brake(e2e_stack, app) is None
        wait_text(driver, "audit", "brake released admin all clear")
        assert open_alert(driver) is None and driver.execute_script("return window.__pwned") is None


def api_brake(e2e: E2E, app: str) -> Any:
    return e2e.api.request("GET", f"/tars/apps/{app}/brake")["brake"]


def test_pages_static_files_and_json_send_the_security_headers(e2e_stack: E2E, app: str) -> None:
    url = e2e_stack.stack.url
    cookies = {"_token": e2e_stack.stack.token()}
    for path in ("/tars/ui", "/tars/static/brake.js", "/tars/static/tars.js",
                 "/tars/static/tars.css"):
        r = httpx.get(url + path, cookies=cookies, timeout=30)
        assert r.status_code == 200, path
        assert r.headers["content-security-policy"] == CSP, path
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["referrer-policy"] == "same-origin", path
    r = httpx.get(f"{url}/tars/apps/{app}/brake", cookies=cookies, timeout=30)
    assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
    for name in ("..%2Fapi.py", "..%2F..%2Fapi.py", "ui.py"):
        r = httpx.get(f"{url}/tars/static/{name}", cookies=cookies, timeout=30)
        assert r.status_code == 404, f"/tars/static/{name} answered {r.status_code}"


@contextmanager
def framing_page(target: str) -> Iterator[str]:
    """A page on another origin (another loopback port) with ``target`` in an iframe."""
    page = f'<!doctype html><iframe id="tars" src="{target}"></iframe>'

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_airflow_ui_frames_the_page_and_another_origin_cannot(e2e_stack: E2E, app: str) -> None:
    url, api = e2e_stack.stack.url, e2e_stack.api
    api.request("POST", f"/tars/apps/{app}/brake", json={"reason": IMG, "action": "hold"})
    with chromium() as driver:
        log_in(driver, url, e2e_stack.stack.token())
        # The nav entry "Tars brake" opens this address: Airflow's layout around an iframe.
        open_in_airflow(driver, f"{url}/plugin/tars-brake", f"{url}/tars/ui", "the brake page")
        polling.poll(lambda: driver.execute_script("return document.body.dataset.ready"), 15,
                     "the brake page's script to run inside Airflow's UI")
        driver.find_element(By.ID, "app").send_keys(app)
        driver.find_element(By.CSS_SELECTOR, "#show button").click()
        wait_text(driver, "state", "brake ON (hold) by admin")
        assert wait_text(driver, "state", IMG).endswith(f": {IMG}")
        assert driver.execute_script("return document.images.length") == 0
        driver.switch_to.default_content()
        assert open_alert(driver) is None
        assert csp_violations(console(driver)) == []

        with framing_page(f"{url}/tars/ui") as other_origin:
            driver.get(other_origin)
            refused = polling.poll(
                lambda: [m for m in csp_violations(console(driver)) if "frame-ancestors" in m],
                15, "Chromium to refuse framing the page from another origin")
            assert f"Framing '{url}/' violates" in refused[0], refused
            driver.switch_to.frame(driver.find_element(By.ID, "tars"))
            assert driver.find_elements(By.ID, "state") == []
