"""A real headless Chromium (Debian's chromium + chromedriver) for browser tests of Tars pages.

Nothing is downloaded: the driver path is given, so Selenium Manager never runs. Each browser
gets a fresh profile in a temp dir and is quit (profile removed) even when the test fails.
The Airflow user is logged in with the simple auth manager's own session cookie (``_token``,
the JWT ``POST /auth/token`` returns), exactly what the UI's login form sets.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service

from tests import polling

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900"]


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless Chromium with its console log readable (``console_errors``)."""
    profile = tempfile.mkdtemp(prefix="tars-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = None
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def log_in(driver: webdriver.Chrome, base_url: str, token: str) -> None:
    """Set the Airflow session cookie for ``base_url`` (a page of that origin must load first)."""
    driver.get(base_url + "/api/v2/version")
    driver.add_cookie({"name": "_token", "value": token, "path": "/"})


def console(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """Browser console entries since the last call (CSP violations show here as SEVERE)."""
    return list(driver.get_log("browser"))


def open_alert(driver: webdriver.Chrome) -> str | None:
    """The text of an open alert/confirm/prompt dialog, or None."""
    try:
        return driver.switch_to.alert.text
    except NoAlertPresentException:
        return None


def wait_text(driver: webdriver.Chrome, element_id: str, text: str, timeout: float = 15) -> str:
    """The visible text of element ``element_id`` once it contains ``text``."""
    def seen() -> str | None:
        found = driver.find_elements("id", element_id)
        shown = found[0].text if found else ""
        return shown if text in shown else None

    return polling.poll(seen, timeout, f"#{element_id} to show {text!r}", interval=0.1)


def open_in_airflow(driver: webdriver.Chrome, page_url: str, frame_src: str, what: str) -> Any:
    """Open an Airflow UI page that shows a Tars page in its iframe; check the iframe's
    address and switch into it (the caller waits for the page's script)."""
    from selenium.webdriver.common.by import By

    driver.get(page_url)
    frame = polling.poll(lambda: driver.find_elements(By.TAG_NAME, "iframe"), 30,
                         f"Airflow's UI to embed {what}")[0]
    assert frame.get_attribute("src") == frame_src
    driver.switch_to.frame(frame)
    return frame
