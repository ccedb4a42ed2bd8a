"""The run note's headline: where the release is, who failed and why, and the brake."""

from __future__ import annotations

import pytest

from tars_operators.release.machine import Brake
from tars_operators.release.notes import (
    Progress, compose, failure_from_message, with_brake,
)

pytestmark = pytest.mark.unit

HOLD = Brake(by="admin", reason="db failover", at="2026-11-29T20:00:00+00:00")


def test_a_running_stage_with_the_brake_off() -> None:
    line = Progress("batch 1/2", 3, 10, "2.0.0", 0, 1).line()
    assert line == "batch 1/2 · 3/10 hosts on 2.0.0 · 0 failed (budget 1) · brake off"


def test_the_brake_says_its_action_who_and_why() -> None:
    line = Progress("fort", 0, 10, "2.0.0", 0, 0, HOLD).line()
    assert line.endswith(" · brake ON (hold) by admin: db failover")
    rollback = Brake(by="ann", reason="errors up", at="", action="rollback")
    assert Progress("fort", 0, 10, "2.0.0", 0, 0, rollback).line().endswith(
        " · brake ON (rollback) by ann: errors up")


def test_the_failed_host_and_its_step_are_in_the_headline() -> None:
    message = ("web01 failed@health: health check 'http' did not pass within its 15s timeout "
               "(checked for 15s) — host OUT OF ROTATION until rollback or repair")
    item = failure_from_message("web01", message)
    assert item.startswith("web01 health (health check 'http' did not pass")
    assert "OUT OF ROTATION" not in item and len(item) < 90  # the details line keeps it all
    line = Progress("fort", 0, 10, "2.0.0", 1, 0, None, (item,), "").line()
    assert line.startswith(f"fort · 0/10 hosts on 2.0.0 · 1 failed (budget 0): {item} · ")
    assert line.endswith(" · brake off")


def test_many_failed_hosts_keep_the_headline_short() -> None:
    items = tuple(f"web0{i} stage (cannot connect)" for i in range(1, 7))
    line = Progress("batch 2/2", 3, 10, "2.0.0", 6, 6, None, items).line()
    assert "web03 stage" in line and "web04" not in line
    assert ", +3 more (below) · brake off" in line


def test_a_failure_without_the_host_task_format_still_names_the_host() -> None:
    assert failure_from_message("web02", "") == "web02 failed (see the task log)"


def test_what_happens_now_follows_the_stage() -> None:
    line = Progress("fort", 0, 10, "2.0.0", 0, 0, now="web01 health-checking").line()
    assert line.startswith("fort: web01 health-checking · 0/10 hosts on 2.0.0")


def test_a_brake_reason_cannot_break_or_bloat_the_headline() -> None:
    hostile = Brake(by="ops", reason="line one\nline two " + "x" * 300, at="")
    line = Progress("fort", 0, 1, "2.0.0", 0, 0, hostile).line()
    assert "\n" not in line and "line one line two" in line
    assert len(line) < 200 and line.endswith("…")


NOTE = compose("batch 1/2 · 2/4 hosts on 2.0.0 · 0 failed (budget 0) · brake off",
               "ann", "weekly release", "OPS-1", ["continue: batch_1 passed"])


def test_pulling_the_brake_changes_only_the_brake_part_of_the_note() -> None:
    pulled = with_brake(NOTE, HOLD)
    head, rest = pulled.split("\n", 1)
    assert head == ("batch 1/2 · 2/4 hosts on 2.0.0 · 0 failed (budget 0) · "
                    "brake ON (hold) by admin: db failover")
    assert rest == NOTE.split("\n", 1)[1]
    assert with_brake(pulled, None) == NOTE  # released: back as it was
    other = Brake(by="bob", reason="second thoughts", at="", action="rollback")
    assert with_brake(pulled, other).split("\n", 1)[0].endswith(
        " · brake ON (rollback) by bob: second thoughts")


def test_a_note_without_a_brake_part_gets_one_when_the_brake_is_pulled() -> None:
    planned = compose("planned: 10 hosts → 2.0.0 (fort: 1, batch_1: 9)", "ann", "r", "")
    assert with_brake(planned, None) == planned
    assert with_brake(planned, HOLD).split("\n", 1)[0] == (
        "planned: 10 hosts → 2.0.0 (fort: 1, batch_1: 9) · brake ON (hold) by admin: db failover")
    assert with_brake(None, HOLD) == "brake ON (hold) by admin: db failover"
    assert with_brake(None, None) == ""


def test_a_brake_reason_that_looks_like_a_brake_part_is_replaced_whole() -> None:
    tricky = Brake(by="x", reason="see · brake off", at="")
    once = with_brake(NOTE, tricky)
    assert with_brake(once, None) == NOTE


def test_a_note_written_as_the_brake_changes_is_written_again_with_it() -> None:
    # The brake route wrote "brake ON" into the note while a task's note (composed with the
    # brake off) was on its way: once written, the task reads the brake again and fixes it.
    from tars_operators.release.machine import Brake
    from tars_operators.release.notes import current_brake_note

    note = "batch 1/2: host02 health-checking · 1/4 hosts on 2.0.0 · 0 failed (budget 0) · " \
           "brake off\n\nby **admin** · why"
    pulled = Brake(by="admin", reason="errors up", at="2026-11-30T07:35:08Z", action="hold")
    fixed = current_brake_note("tars_deploy__demo", note, read=lambda app: pulled)
    assert fixed is not None and fixed.startswith(
        "batch 1/2: host02 health-checking · 1/4 hosts on 2.0.0 · 0 failed (budget 0) · "
        "brake ON (hold) by admin: errors up\n"), fixed
    assert fixed.endswith("by **admin** · why")
    assert current_brake_note("tars_deploy__demo", note, read=lambda app: None) is None
    assert current_brake_note("tars_canary__demo", note, read=lambda app: pulled) == fixed
    assert current_brake_note("tars_rollback__demo", note, read=lambda app: pulled) is None

    def unreadable(app: str) -> None:
        raise RuntimeError("api-server down")

    assert current_brake_note("tars_deploy__demo", note, read=unreadable) is None
