"""Actions in the App and Release tabs, per user, in a real headless Chromium (issue 13).

Under the FAB auth manager (``tests/e2e/fab.py``), one release of 2.0.0 on three sandbox hosts
waits at its approval after the fort:
- a user with FAB's Viewer role opens the Release and App tabs and sees no action at all (no
  approval form, brake, rollback or refresh); requests forged from the page with its cookie
  (brake pull and release, rollback, answer, refresh) are refused 403 and change nothing;
- the admin answers the approval from the Release tab with a reason: Airflow records the
  answer as its own, the audit says who and why, and the release goes on to succeed;
- a rollback conf the rollback DAG's params refuse is a 400 that starts no run;
- the admin rolls the app back from the App tab: the page links the rollback run, and
  afterwards the hosts serve the previous version again, all UP.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from sandbox import Sandbox
from tars_operators.api import app as tars_app
from tests import polling
from tests.e2e.browser import chromium, console, log_in, open_alert, wait_text
from tests.e2e.fab import READER, READER_PASSWORD, FabStack, fab  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e

APP = "perm_actions"
NEW, OLD = "2.0.0", "1.0.0"
ROLLBACK_DAG = f"tars_rollback__{APP}"
# Every control a page could act with; hidden ones (and those inside hidden parts) do not count.
VISIBLE_CONTROLS = """return [...document.querySelectorAll('form, button, input, select, textarea')]
  .filter((e) => e.getClientRects().length > 0).map((e) => e.id || e.name || e.tagName)"""
FORGE = """const [calls, done] = [arguments[0], arguments[arguments.length - 1]];
Promise.all(calls.map(([method, path, body]) => fetch(document.body.dataset.base + path, {
    method, credentials: "same-origin", headers: {"Content-Type": "application/json"},
    body: body === null ? undefined : JSON.stringify(body)})
  .then(async (r) => [method, path, r.status, (await r.json().catch(() => ({}))).detail])))
  .then(done, (error) => done(String(error)));"""


def ready(driver: WebDriver) -> None:
    polling.poll(lambda: driver.execute_script("return document.body.dataset.ready"), 30,
                 "the view's script to run")


def has_route(method: str, path: str) -> bool:
    return any(getattr(r, "path", None) == path and method in getattr(r, "methods", ())
               for r in tars_app.routes)


def audit(fab: FabStack) -> list[dict[str, Any]]:
    return list(fab.api.request("GET", f"/tars/apps/{APP}/audit")["audit"])


def rollback_runs(fab: FabStack) -> int:
    return int(fab.api.request("GET", f"/api/v2/dags/{ROLLBACK_DAG}/dagRuns")["total_entries"])


def test_a_viewer_sees_no_action_and_is_refused_an_editor_answers_and_rolls_back(
        fab: FabStack, fleet: Sandbox) -> None:
    dag_id = fab.add_app(APP, **{"strategy.batches": [1, 2, "100%"], "strategy.approval": {
        "enabled": True, "after": ["fort"], "timeout_seconds": 900, "default": "continue"}})
    url, api = fab.stack.url, fab.api
    hosts = [h.name for h in fleet.hosts[:3]]
    run_id = api.trigger(dag_id, {"version": NEW, "reason": "actions e2e",
                                  "hosts": hosts})["dag_run_id"]
    polling.poll(lambda: api.pending_approvals(dag_id, run_id), 180,
                 "the release to wait for its approval after the fort")
    run_view = f"{url}/tars/views/run?dag_id={dag_id}&run_id={quote(run_id, safe='')}"
    app_view = f"{url}/tars/views/app?dag_id={dag_id}"
    approve_path = f"/apps/{APP}/runs/{dag_id}/{run_id}/approvals/fort.approve"
    api.request("POST", f"/tars/apps/{APP}/brake", json={"reason": "held by the admin"})
    try:
        _viewer_sees_nothing_and_is_refused(fab, run_view, app_view, approve_path)
    finally:
        api.request("DELETE", f"/tars/apps/{APP}/brake", params={"reason": "viewer part done"})

    with chromium() as driver:
        log_in(driver, url, fab.admin)
        # The editor answers from the Release tab, with a reason.
        driver.get(run_view)
        ready(driver)
        form = polling.poll(lambda: driver.find_elements(By.CSS_SELECTOR, ".approval-form"), 30,
                            "the approval form (the admin may answer)")[0]
        assert [b.text for b in form.find_elements(By.TAG_NAME, "button")] == [
            "Continue", "Roll back", "Halt"]
        form.find_element(By.NAME, "reason").send_keys("fort looks healthy")
        form.find_element(By.CSS_SELECTOR, "button[data-option='Continue']").click()

        def answered() -> bool:
            shown = driver.find_element(By.ID, "approval-list").text
            assert "error" not in driver.find_element(By.ID, "approval-list").get_attribute(
                "innerHTML"), shown  # the page shows why the answer was refused
            return not api.pending_approvals(dag_id, run_id)

        polling.poll(answered, 30, "the answer to reach Airflow", interval=0.5)
        run = api.wait(dag_id, run_id, timeout=300)
        assert run["state"] == "success", run.get("note")
        assert {h: fleet.served_version(fleet.host(h)) for h in hosts} == {h: NEW for h in hosts}
        detail = api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/"
                                    "fort.approve/-1/hitlDetails")
        assert detail["chosen_options"] == ["Continue"]
        assert detail["responded_by_user"]["name"] == fab.stack.user
        answered = [e for e in audit(fab) if e["event"] == "approval answered"]
        assert [(e["by"], e["option"], e["reason"], e["run_id"]) for e in answered] == [
            (fab.stack.user, "Continue", "fort looks healthy", run_id)]
        wait_text(driver, "state", "succeeded")
        polling.poll(lambda: not driver.find_element(By.ID, "approvals").is_displayed(), 15,
                     "the answered approval to leave the Release tab")
        assert "total: failed 0 of budget 0" in driver.find_element(By.ID, "summary").text

        # A conf the rollback DAG's params refuse is a 400 and starts no run.
        r = httpx.post(f"{url}/tars/apps/{APP}/rollback", timeout=30,
                       headers={"Authorization": f"Bearer {fab.admin}"},
                       json={"reason": "bad host", "hosts": ["host99"]})
        assert r.status_code == 400 and "Invalid input for param hosts" in r.json()["detail"]
        assert rollback_runs(fab) == 0

        # The editor rolls the app back from the App tab; the page links the run it started.
        driver.get(app_view)
        ready(driver)
        polling.poll(lambda: driver.find_element(By.ID, "rollback").is_displayed(), 15,
                     "the rollback form (the admin may edit the app's runs)")
        driver.find_element(By.ID, "rollback-reason").send_keys("2.0.0 is slow")
        driver.find_element(By.ID, "rollback-button").click()
        link = polling.poll(lambda: driver.find_elements(By.CSS_SELECTOR, "#rollback-state a"),
                            30, "the page to link the rollback run")[0]
        rollback_id = link.text
        assert (link.get_attribute("href") or "").endswith(
            f"/dags/{ROLLBACK_DAG}/runs/{quote(rollback_id, safe='')}")
        rolled = api.wait(ROLLBACK_DAG, rollback_id, timeout=300)
        assert rolled["state"] == "success", rolled.get("note")
        assert rolled["triggering_user_name"] == fab.stack.user
        assert rolled["conf"]["reason"] == "2.0.0 is slow"
        assert {h: fleet.served_version(fleet.host(h)) for h in hosts} == {h: OLD for h in hosts}
        assert set(fleet.server_states().values()) == {"UP"}
        [requested] = [e for e in audit(fab) if e["event"] == "rollback requested"]
        assert (requested["by"], requested["reason"], requested["run_id"]) == (
            fab.stack.user, "2.0.0 is slow", rollback_id)
        assert open_alert(driver) is None
        assert [e["message"] for e in console(driver)
                if "Content Security Policy" in e["message"]] == []


def _viewer_sees_nothing_and_is_refused(fab: FabStack, run_view: str, app_view: str,
                                        approve_path: str) -> None:
    api = fab.api
    before = audit(fab)
    with chromium() as driver:
        log_in(driver, fab.stack.url, fab.token(READER, READER_PASSWORD))
        driver.get(run_view)
        ready(driver)
        # The pending approval is shown (reading is allowed), with no way to answer it.
        wait_text(driver, "approvals", "continue the release after fort")
        wait_text(driver, "approval-state", "Only who may change this app's releases can answer")
        assert driver.execute_script(VISIBLE_CONTROLS) == []
        driver.get(app_view)
        ready(driver)
        wait_text(driver, "state", "host(s)")
        assert driver.execute_script(VISIBLE_CONTROLS) == []

        # Forged from the page, with the viewer's cookie: every change is refused.
        calls: list[list[Any]] = [
            ["POST", f"/apps/{APP}/brake", {"reason": "forged", "action": "rollback"}],
            ["DELETE", f"/apps/{APP}/brake?reason=forged", None],
            ["POST", f"/apps/{APP}/rollback", {"reason": "forged"}],
            ["POST", approve_path, {"option": "Roll back", "reason": "forged"}],
        ]
        if has_route("POST", "/apps/{app_name}/refresh"):
            calls.append(["POST", f"/apps/{APP}/refresh", None])
        driver.set_script_timeout(30)
        answers = driver.execute_async_script(FORGE, calls)
        refused = f"{READER} may not change releases of {APP}: that needs edit permission"
        assert [(m, p, s) for m, p, s, _ in answers] == [(m, p, 403) for m, p, _ in calls], answers
        assert all(str(detail).startswith(refused) for *_, detail in answers), answers
    # Nothing changed: the admin's brake, the pending approval, no rollback run, no audit entry.
    brake = api.request("GET", f"/tars/apps/{APP}/brake")["brake"]
    assert (brake["by"], brake["action"], brake["reason"]) == (
        fab.stack.user, "hold", "held by the admin")
    assert rollback_runs(fab) == 0
    dag_id, run_id = approve_path.split("/")[4:6]
    assert [a["task_instance"]["task_id"] for a in api.pending_approvals(dag_id, run_id)] == [
        "fort.approve"]
    assert audit(fab)[len(before):] == []
