"""Starting releases (issue 7): the trigger form, windows and freezes, the scheduled canary,
REST and the ``tars`` client — under the real api-server, scheduler, dag-processor, triggerer.

The client runs as a CI job would: the installed ``tars`` script in a subprocess, configured
only through TARS_AIRFLOW_* environment variables.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from tests.e2e.harness import E2E, demo_config
from tests.e2e.harness import poll as harness_poll

pytestmark = pytest.mark.e2e

TARS = str(Path(sys.executable).parent / "tars")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TZ = "Asia/Kolkata"  # UTC+05:30: windows are checked in the app's timezone, not UTC


def client_env(e2e: E2E) -> dict[str, str]:
    """Only what a CI job has: a PATH and the TARS_AIRFLOW_* variables."""
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
            "NO_PROXY": "*", "TARS_AIRFLOW_URL": e2e.stack.url,
            "TARS_AIRFLOW_USER": e2e.stack.user, "TARS_AIRFLOW_PASSWORD": e2e.stack.password}


def tars(e2e: E2E, *args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    result = subprocess.run([TARS, *args, "--poll", "1"] if "--wait" in args else [TARS, *args],
                            env=client_env(e2e), capture_output=True, text=True, timeout=timeout)
    print(f"\n$ tars {' '.join(args)}  → exit {result.returncode}\n{result.stdout}{result.stderr}")
    return result


class Background:
    """``tars …`` running in the background; its output is collected line by line."""

    def __init__(self, e2e: E2E, *args: str):
        self.args = args
        self.proc = subprocess.Popen([TARS, *args, "--poll", "1"], env=client_env(e2e),
                                     text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def says(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def finish(self, timeout: float = 420) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(10)
        out = "".join(self.lines)
        print(f"\n$ tars {' '.join(self.args)}  → exit {code}\n{out}")
        return code, out


def poll(what: str, check: Any, timeout: float = 120, every: float = 0.5) -> Any:
    return harness_poll(check, timeout, what, every)


def runs(e2e: E2E, dag_id: str) -> list[dict[str, Any]]:
    return e2e.api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns",
                           params={"order_by": "-run_after", "limit": 20})["dag_runs"]


def untouched(e2e: E2E, version: str) -> None:
    assert e2e.versions() == {h.name: "1.0.0" for h in e2e.sandbox.hosts}
    for host in e2e.sandbox.hosts:
        assert version not in e2e.releases_on(host.name), f"{host.name} was touched"


def next_minute(lead: float) -> datetime:
    """The first whole minute at least ``lead`` seconds from now (UTC)."""
    moment = datetime.now(timezone.utc) + timedelta(seconds=lead)
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)


def window_at(start: datetime, minutes: int) -> dict[str, Any]:
    """A window [start, start + minutes) on start's weekday, as HH:MM in the app's timezone."""
    local = start.astimezone(ZoneInfo(TZ))
    end = local + timedelta(minutes=minutes)
    return {"days": [DAYS[local.weekday()]], "start": f"{local:%H:%M}", "end": f"{end:%H:%M}"}


def closed_window() -> dict[str, Any]:
    """A window that is certainly not open now: tomorrow (local) for one minute at 03:00."""
    tomorrow = datetime.now(ZoneInfo(TZ)) + timedelta(days=1)
    return {"days": [DAYS[tomorrow.weekday()]], "start": "03:00", "end": "03:01"}


def rewrite(e2e: E2E, name: str, **overrides: Any) -> None:
    """Change an app's config in place (tasks read it at run time; the DAG keeps its shape)."""
    data = demo_config(name, e2e.sandbox.inventory_path, **overrides)
    (e2e.config_dir / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


# ---- the trigger form ------------------------------------------------------------------


def test_trigger_form_fields_come_through_the_dag_details(e2e: E2E) -> None:
    dag_id = e2e.add_app("demo")
    details = e2e.api.request("GET", f"/api/v2/dags/{dag_id}/details")
    assert details["is_paused"] is False, "a new app's DAG must be runnable at once"
    params = details["params"]
    version = params["version"]["schema"]
    assert version["title"] == "Version" and version["section"] == "Release"
    assert "2.1.0" not in str(params["version"].get("value"))  # no default: a person chooses
    # whole-string: "latest" or the app's version_pattern, and no trailing newline
    assert version["pattern"].startswith("^(?:latest|^[0-9]+"), version["pattern"]
    assert version["pattern"].endswith("$(?!\\n)"), version["pattern"]
    hosts = params["hosts"]["schema"]
    assert hosts["items"]["enum"] == [h.name for h in e2e.sandbox.hosts]
    assert params["batches"]["value"] == "1, 25%, 100%"  # the app's strategy.batches
    assert params["force"]["schema"]["section"] == "Safety overrides"
    assert "description" in params["force_reason"] or params["force_reason"]["schema"]["title"]


def test_bad_input_is_refused_before_any_host(e2e: E2E) -> None:
    dag_id = e2e.add_app("demo")
    api = e2e.api
    before = len(runs(e2e, dag_id))
    with pytest.raises(Exception, match="400.*version") as exc:
        api.trigger(dag_id, {"version": "2.0"})
    print(f"\nAPI: {exc.value}")
    with pytest.raises(Exception, match="400.*host99") as exc:
        api.trigger(dag_id, {"version": "2.0.0", "hosts": ["host99"]})
    print(f"API: {exc.value}")
    assert len(runs(e2e, dag_id)) == before, "a refused trigger must not create a run"
    bad = tars(e2e, "deploy", "demo", "2.0.0; rm -rf /", "--wait")
    assert bad.returncode == 2 and "is not allowed" in bad.stderr
    floor = tars(e2e, "deploy", "demo", "2.0.0", "--batches", "100%", "--wait")
    assert floor.returncode == 2
    assert "traffic.min_in_service needs" in floor.stderr
    assert len(runs(e2e, dag_id)) == before
    # Straight through REST (no pre-check): prepare refuses the floor before any host.
    run = e2e.release(dag_id, {"version": "2.0.0", "batches": "100%"}, timeout=120)
    assert run["state"] == "failed"
    assert run["note"].startswith("refused before any host was touched: fort: batch") or \
        "traffic.min_in_service needs" in run["note"], run["note"]
    untouched(e2e, "2.0.0")


# ---- tars deploy / rollback ------------------------------------------------------------


def test_tars_deploy_wait_releases_then_tars_rollback(e2e: E2E) -> None:
    e2e.add_app("demo")
    result = tars(e2e, "deploy", "demo", "2.1.0", "--reason", "e2e: tars client", "--ticket",
                  "E2E-7", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "triggered tars_deploy__demo run " in out
    for stage in ("fort: 1/1", "batch_1: 1/1", "batch_2: 2/2", "batch_3: 6/6"):
        assert f"{stage} host(s) done" in out, stage
    assert out.rstrip().splitlines()[-1].endswith(
        "success: succeeded · 10/10 hosts on 2.1.0 · 0 failed (budget 0) · brake off")
    assert e2e.versions() == {h.name: "2.1.0" for h in e2e.sandbox.hosts}

    back = tars(e2e, "rollback", "demo", "--reason", "e2e rollback", "--hosts", "host01,host02",
                "--wait")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "restore: 2/2 host(s) done" in back.stdout
    versions = e2e.versions()
    assert versions["host01"] == versions["host02"] == "1.0.0"
    assert {versions[h.name] for h in e2e.sandbox.hosts[2:]} == {"2.1.0"}


def test_tars_deploy_broken_version_exits_1_with_the_reason(e2e: E2E) -> None:
    e2e.add_app("demo")
    result = tars(e2e, "deploy", "demo", "2.0.0-broken", "--wait")
    assert result.returncode == 1
    last = result.stdout.rstrip().splitlines()[-1]
    assert "failed: rolled back: fort: 1 host(s) failed (host01)" in last, last
    assert "fort: 0/1 host(s) done, 1 FAILED" in result.stdout
    assert e2e.versions() == {h.name: "1.0.0" for h in e2e.sandbox.hosts}


def test_tars_brake_and_release_brake(e2e: E2E) -> None:
    e2e.add_app("demo")
    pulled = tars(e2e, "brake", "demo", "--reason", "e2e: latency alarm")
    assert pulled.returncode == 0 and f"by {e2e.stack.user} (hold)" in pulled.stdout
    try:
        status = tars(e2e, "status", "demo")
        assert status.returncode == 0
        assert f"brake ON by {e2e.stack.user} (hold): e2e: latency alarm" in status.stdout
    finally:
        released = tars(e2e, "release-brake", "demo", "--reason", "e2e done")
    assert released.returncode == 0 and "released (was pulled by" in released.stdout
    audit = e2e.api.request("GET", "/tars/apps/demo/audit")["audit"]
    assert [a["event"] for a in audit[-2:]] == ["brake pulled", "brake released"]


# ---- approvals -------------------------------------------------------------------------


def test_approval_answered_over_rest_and_by_tars_approve(e2e: E2E) -> None:
    name = "demo_approve"
    dag_id = e2e.add_app(name, **{"strategy.approval": {
        "enabled": True, "after": ["fort"], "timeout_seconds": 900, "default": "rollback"}})
    api = e2e.api
    scope = ("--hosts", "host01,host02", "--wait")

    bg = Background(e2e, "deploy", name, "2.0.0", *scope)
    poll("the client to show the approval", lambda: bg.says("awaiting approval after fort"),
         timeout=180)
    assert "tars approve demo_approve release__2.0.0__" in "".join(bg.lines)
    (waiting,) = api.pending_approvals(dag_id)
    ti = waiting["task_instance"]
    assert ti["task_id"] == "fort.approve" and e2e.versions()["host02"] == "1.0.0"
    api.answer(dag_id, ti["dag_run_id"], "fort.approve", "Continue")  # plain REST PATCH
    code, out = bg.finish()
    assert code == 0, out
    assert e2e.versions()["host02"] == "2.0.0"

    bg = Background(e2e, "deploy", name, "2.1.0", *scope)
    poll("the second approval", lambda: bg.says("awaiting approval after fort"), timeout=180)
    answered = tars(e2e, "approve", name)
    assert answered.returncode == 0 and "answered 'Continue'" in answered.stdout
    code, out = bg.finish()
    assert code == 0, out
    versions = e2e.versions()
    assert (versions["host01"], versions["host02"], versions["host03"]) == ("2.1.0", "2.1.0",
                                                                           "1.0.0")


# ---- deploy windows and freezes ---------------------------------------------------------


def test_reject_policy_refuses_at_once_and_force_runs_and_is_recorded(e2e: E2E) -> None:
    name = "demo_reject"
    e2e.add_app(name, schedule={"timezone": TZ, "windows": [closed_window()],
                                "outside_window": "reject"})
    refused = tars(e2e, "deploy", name, "2.0.0", "--wait")
    assert refused.returncode == 1
    assert "the run will be refused" in refused.stdout
    assert "failed: refused before any host was touched: outside deploy windows (Asia/Kolkata)" \
        in refused.stdout
    untouched(e2e, "2.0.0")

    forced = tars(e2e, "deploy", name, "2.0.0", "--hosts", "host01", "--force",
                  "e2e hotfix INC-7", "--reason", "hotfix", "--wait")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "forced past it" in forced.stdout
    assert e2e.versions()["host01"] == "2.0.0"
    run = runs(e2e, f"tars_deploy__{name}")[0]
    # the final note keeps the override (every note carries the run's reason line)
    assert "FORCED outside the deploy windows: e2e hotfix INC-7" in run["note"], run["note"]
    audit = e2e.api.request("GET", f"/tars/apps/{name}/audit")["audit"]
    entry = audit[-1]
    assert (entry["event"], entry["reason"], entry["by"]) == (
        "window overridden", "e2e hotfix INC-7", e2e.stack.user)
    assert entry["run_id"] == run["dag_run_id"] and entry["version"] == "2.0.0"


def test_a_freeze_refuses_even_a_waiting_policy(e2e: E2E) -> None:
    name = "demo_freeze"
    today = datetime.now(ZoneInfo(TZ)).date()
    e2e.add_app(name, schedule={"timezone": TZ, "outside_window": "wait", "freezes": [
        {"start": str(today - timedelta(days=1)), "end": str(today + timedelta(days=1)),
         "reason": "e2e freeze"}]})
    result = tars(e2e, "deploy", name, "2.0.0", "--wait")
    assert result.returncode == 1
    assert "refused before any host was touched: frozen" in result.stdout
    assert "e2e freeze" in result.stdout
    untouched(e2e, "2.0.0")


# ---- a window opens: the deploy waiting for it and the scheduled canary, at once ------


def test_at_the_windows_opening_a_waiting_deploy_proceeds_and_the_scheduled_canary_runs(
        e2e: E2E) -> None:
    """Two apps whose deploy windows open at the same minute (one wait for both; windows and
    cron ticks are whole minutes), released at once on different hosts. ``demo_window``: a
    deploy started outside its window waits in the triggerer, holding no worker slot, and
    proceeds when the window opens. ``demo_canary``: its scheduled canary runs at the window's
    first tick, releases the latest artifact to the fort host and waits for approval."""
    window, canary = "demo_window", "demo_canary"
    canary_id = f"tars_canary__{canary}"
    waiter = e2e.sandbox.hosts[-1].name  # the canary's fort host is the first
    dag_id = e2e.add_app(window, schedule={"timezone": TZ, "windows": [closed_window()]})
    opens = next_minute(lead=35)  # add_app asks for a parse at once (harness.parse_now)
    local = opens.astimezone(ZoneInfo(TZ))
    try:
        e2e.add_app(canary, schedule={
            "timezone": TZ, "windows": [window_at(opens, 5)],
            # every hour at this minute: the only tick inside the window is when it opens
            "canary": {"cron": f"{local.minute} * * * *", "then": "approval"}})
        dag = e2e.wait_dag(canary_id)
        assert dag["is_paused"] is False
        assert "in deploy windows" in dag["timetable_summary"]
        run_after = datetime.fromisoformat(dag["next_dagrun_run_after"].replace("Z", "+00:00"))
        assert run_after == opens, f"next canary at {run_after}, expected the window at {opens}"

        rewrite(e2e, window, schedule={"timezone": TZ, "windows": [window_at(opens, 10)],
                                       "outside_window": "wait"})
        bg = Background(e2e, "deploy", window, "2.0.0", "--hosts", waiter, "--wait")
        run = poll("the run to wait for the window", lambda: [
            r for r in runs(e2e, dag_id) if (r.get("note") or "").startswith("waiting for deploy")])
        assert e2e.task_states(dag_id, run[0]["dag_run_id"])["prepare"] == "deferred"
        assert datetime.now(timezone.utc) < opens
        assert e2e.versions()[waiter] == "1.0.0"

        # The window opens: the waiting deploy proceeds…
        code, out = bg.finish()
        assert code == 0, out
        assert f"opens {opens:%Y-%m-%d %H:%M} UTC" in out
        assert "waiting for the deploy window (deferred: no worker slot is held)" in out
        tis = {t["task_id"]: t for t in e2e.api.task_instances(dag_id, run[0]["dag_run_id"])}
        started = datetime.fromisoformat(tis["fetch"]["start_date"].replace("Z", "+00:00"))
        assert started >= opens, f"fetch started at {started}, before the window opened at {opens}"
        assert e2e.versions()[waiter] == "2.0.0"

        # …and the canary runs at the window's first tick, then waits for approval.
        (crun,) = poll("the scheduled canary run", lambda: runs(e2e, canary_id), timeout=150)
        assert crun["run_type"] == "scheduled"
        poll("the canary's approval", lambda: e2e.api.pending_approvals(canary_id), timeout=180)
        versions = e2e.versions()
        assert versions["host01"] == "2.1.0", "the canary releases the latest artifact"
        assert {versions[h.name] for h in e2e.sandbox.hosts[1:-1]} == {"1.0.0"}
        answered = tars(e2e, "approve", canary)
        assert answered.returncode == 0, answered.stderr
        final = e2e.api.wait(canary_id, crun["dag_run_id"], timeout=180)
        assert final["state"] == "success", final.get("note")
        assert final["note"].startswith("succeeded · 1/1 hosts on 2.1.0"), final["note"]
        nxt = e2e.api.dag(canary_id)["next_dagrun_run_after"]
        assert nxt.startswith(f"{opens + timedelta(days=7):%Y-%m-%dT%H:%M}"), nxt
        status = tars(e2e, "status", canary)
        assert f"canary {canary_id}: " in status.stdout and f"next run {nxt}" in status.stdout
    finally:
        (e2e.config_dir / f"{canary}.yaml").unlink(missing_ok=True)
        try:
            e2e.api.request("PATCH", f"/api/v2/dags/{canary_id}", json={"is_paused": True})
        except Exception:  # noqa: BLE001 - never parsed: nothing to pause
            pass
