"""The run note tells the truth within seconds (issue 13): the brake as soon as it is pulled
or released, the host being health-checked, and a failed host as soon as its task fails.

Real releases through the real scheduler, triggerer and api-server; the note is read the
way the UI reads it (``GET /api/v2/dags/{dag}/dagRuns/{run}``).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import pytest

from tests.e2e.harness import E2E, poll

pytestmark = pytest.mark.e2e

FRESH = 5.0  # seconds within which the note must show a change (issue 13)


def headline(e2e: E2E, dag_id: str, run_id: str) -> str:
    return (e2e.api.run(dag_id, run_id).get("note") or "").split("\n", 1)[0]


def wait_headline(e2e: E2E, dag_id: str, run_id: str, want: str, timeout: float,
                  what: str) -> str:
    """The run's headline once it contains ``want``; fails after ``timeout`` s from now."""
    seen: list[str] = []

    def check() -> str | None:
        head = headline(e2e, dag_id, run_id)
        if not seen or seen[-1] != head:
            seen.append(head)
        return head if want in head else None

    try:
        return poll(check, timeout, what, interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; headlines seen: {seen}") from None


def brake(e2e: E2E, app: str, method: str, **body: Any) -> Any:
    kwargs = {"json": body} if method == "POST" else {"params": body}
    return e2e.api.request(method, f"/tars/apps/{app}/brake", **kwargs)


def test_the_note_shows_a_pulled_brake_within_5s_and_its_release(e2e: E2E) -> None:
    app = "demo_live_brake"
    dag_id = e2e.add_app(app, **{"strategy.batches": [1, 2, "100%"]})
    brake(e2e, app, "DELETE", reason="e2e: clean start")
    hosts = [h.name for h in e2e.sandbox.hosts[:4]]
    run_id = e2e.api.trigger(dag_id, {"version": "2.0.0-slow", "hosts": hosts,
                                      "reason": "e2e live note"})["dag_run_id"]
    reason = "e2e: checkout errors up"
    try:
        # Mid-release: the fort host is done and batch 1 is under way.
        poll(lambda: "2.0.0-slow" in e2e.releases_on(hosts[1]), 240,
             "batch 1 to reach the second host", interval=0.2)
        assert e2e.api.run(dag_id, run_id)["state"] == "running"
        pulled = time.monotonic()
        brake(e2e, app, "POST", reason=reason, action="hold")
        head = wait_headline(e2e, dag_id, run_id,
                             f"brake ON (hold) by {e2e.stack.user}: {reason}",
                             FRESH - (time.monotonic() - pulled), "the brake in the note")
        print(f"\nnote {time.monotonic() - pulled:.1f}s after the pull: {head}")
        assert "brake off" not in head, head
        # Held: the gate after batch 1 waits on the brake, and the note still says why.
        poll(lambda: e2e.task_states(dag_id, run_id).get("batch_1.gate") == "deferred", 240,
             "batch_1.gate to wait on the brake")
        head = headline(e2e, dag_id, run_id)
        assert head.startswith("batch 1/2 · 2/4 hosts on 2.0.0-slow"), head
        assert head.endswith(f"brake ON (hold) by {e2e.stack.user}: {reason}"), head
        assert "2.0.0-slow" not in e2e.releases_on(hosts[2])  # nothing moves while held
        released = time.monotonic()
    finally:
        brake(e2e, app, "DELETE", reason="e2e: all clear")
    head = wait_headline(e2e, dag_id, run_id, "brake off",
                         FRESH - (time.monotonic() - released), "the released brake in the note")
    assert "brake ON" not in head, head
    run = e2e.api.wait(dag_id, run_id, timeout=300)
    assert run["state"] == "success", run["note"]
    assert run["note"].startswith("succeeded · 4/4 hosts on 2.0.0-slow"), run["note"]
    versions = e2e.versions()
    assert [versions[h] for h in hosts] == ["2.0.0-slow"] * 4


def _end_date(e2e: E2E, dag_id: str, run_id: str, task: str, index: int) -> datetime | None:
    for t in e2e.api.task_instances(dag_id, run_id):
        if t["task_id"] == task and t["map_index"] == index and t["state"] == "failed":
            return datetime.fromisoformat(t["end_date"].replace("Z", "+00:00"))
    return None


def test_the_note_shows_the_host_health_checking_then_failed_within_5s(e2e: E2E) -> None:
    dag_id = e2e.add_app("demo_live_broken")
    fort = e2e.sandbox.hosts[0].name
    run_id = e2e.api.trigger(dag_id, {"version": "2.0.0-broken",
                                      "reason": "e2e live note: broken build"})["dag_run_id"]
    # While its checks run (10 s inline, then the triggerer), the note says so.
    head = wait_headline(e2e, dag_id, run_id, f"fort: {fort} health-checking", 180,
                         "the live health stage in the note")
    assert head.startswith(f"fort: {fort} health-checking · 0/10 hosts on 2.0.0-broken"), head

    failed_item = f"{fort} health ("
    shown_at: list[datetime] = []

    def failure_shown() -> datetime | None:
        note = e2e.api.run(dag_id, run_id).get("note") or ""
        if failed_item in note.split("\n", 1)[0] or f"{fort} failed@health" in note:
            shown_at.append(datetime.now(timezone.utc))
            return shown_at[0]
        return None

    poll(failure_shown, 120, "the failed fort host in the note", interval=0.2)
    end = poll(lambda: _end_date(e2e, dag_id, run_id, "fort.release", 0), 60,
               "fort.release[0] to be failed with an end date")
    lag = (shown_at[0] - end).total_seconds()
    print(f"\nfailed host in the note {lag:+.1f}s after its task ended")
    assert lag < FRESH, f"the note showed the failure {lag:.1f}s after the task ended"

    run = e2e.api.wait(dag_id, run_id, timeout=300)
    note = run["note"] or ""
    assert run["state"] == "failed", note
    # The health error times the whole check (inline + triggerer) against its 15 s timeout.
    assert f"{fort} failed@health: health check" in note, note
    assert "did not pass within its 15s timeout (checked for 1" in note, note
    assert "within 5s" not in note, note
    assert "rollback.report fails the run on purpose: the rollback itself succeeded" in note, note
    assert e2e.versions() == {h.name: "1.0.0" for h in e2e.sandbox.hosts}
