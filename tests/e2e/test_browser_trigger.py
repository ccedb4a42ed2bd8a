"""Releasing from the Airflow UI: the trigger form, clicked by a person in a real Chromium.

Airflow's form treats every Param whose type does not allow null as required and keeps the
Trigger button disabled until each is filled. Only the version and the reason are required:
a person fills those (and a ticket), clicks Trigger, and the release runs on every host.
"""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from tests import polling
from tests.e2e.browser import chromium, log_in
from tests.e2e.harness import E2E

pytestmark = pytest.mark.e2e

VERSION = "2.0.0"


def dialog_button(driver: WebDriver, text: str) -> WebElement | None:
    found = [b for b in driver.find_elements(By.CSS_SELECTOR, "[role=dialog] button")
             if b.text.strip() == text]
    return found[0] if found else None


def section_is_red(driver: WebDriver, title: str) -> bool:
    """Airflow marks a section holding an unfilled required field with a red "!" icon (an icon
    beside the section's chevron)."""
    button = dialog_button(driver, title)
    assert button is not None, f"no section {title!r} in the trigger form"
    return len(button.find_elements(By.CSS_SELECTOR, "svg")) > 1


def test_the_form_triggers_a_release_with_only_version_reason_and_ticket(e2e: E2E) -> None:
    dag_id = e2e.add_app("formapp")
    url, api = e2e.stack.url, e2e.api
    before = {r["dag_run_id"] for r in api.runs(dag_id, limit=50)}
    with chromium() as driver:
        log_in(driver, url, e2e.stack.token())
        driver.get(f"{url}/dags/{dag_id}")
        polling.poll(lambda: driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Trigger Dag']"),
                     30, "the DAG page's Trigger button")[0].click()
        trigger = polling.poll(lambda: dialog_button(driver, "Trigger"), 30, "the trigger form")
        assert trigger.get_attribute("disabled"), "Trigger enabled before version and reason"
        assert section_is_red(driver, "Release")  # version and reason are still empty
        assert not section_is_red(driver, "Scope") and not section_is_red(driver, "Safety overrides")

        dialog_button(driver, "Release").click()  # type: ignore[union-attr]
        fields = {name: polling.poll(lambda n=name: _visible(driver, f"element_{n}"), 15, name)
                  for name in ("version", "reason", "ticket")}
        fields["version"].send_keys(VERSION)
        fields["reason"].send_keys("e2e: released from the form")
        fields["ticket"].send_keys("OPS-1234")
        polling.poll(lambda: not trigger.get_attribute("disabled"), 15, "Trigger to be enabled")
        trigger.click()

        run_id = polling.poll(lambda: next((r["dag_run_id"] for r in api.runs(dag_id, limit=50)
                                            if r["dag_run_id"] not in before), None),
                              30, "the run the form triggered")
    run = api.wait(dag_id, run_id, timeout=300)
    print(f"\n{run_id}: {run['state']}: {run.get('note')}")
    assert run["state"] == "success", run.get("note")
    assert run["conf"]["version"] == VERSION and run["conf"]["ticket"] == "OPS-1234"
    assert e2e.versions() == {h.name: VERSION for h in e2e.sandbox.hosts}
    assert set(e2e.sandbox.server_states().values()) == {"UP"}


def _visible(driver: WebDriver, element_id: str) -> WebElement | None:
    found = [e for e in driver.find_elements(By.ID, element_id) if e.is_displayed()]
    return found[0] if found else None
