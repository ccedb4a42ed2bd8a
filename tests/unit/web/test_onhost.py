"""The App view's on-host columns: what the last refresh read, the live LB, datacenter/group."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tars_operators.web.onhost import InspectRecord, LiveLB, datacenter, lb_status, on_host_rows

pytestmark = pytest.mark.unit

T = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
HOSTS = [("h1", "dc1", {}), ("h2", "dc2", {"datacenter": "fra"}), ("h3", "dc2", {})]


def report(host: str, version: str | None, *, lb: str = "UP (admin ready, 0 sessions, check L7OK)",
           error: str = "", releases: tuple[tuple[str, str], ...] = ()) -> dict:
    return {"host": host, "version": version, "status": "good" if version else None,
            "previous_good": None, "releases": [{"version": v, "status": s} for v, s in releases],
            "lb": lb, "in_service": True, "phase": "", "error": error}


def inspected(read_at: str, *reports: dict, state: str = "success") -> InspectRecord:
    return InspectRecord("tars_inspect__demo", "manual__2", state, T, T, "manual__2",
                         {"read_at": read_at, "hosts": list(reports)})


def test_a_refresh_shows_each_hosts_version_other_releases_and_lb_state_as_of_its_time() -> None:
    insp = inspected("2026-11-29T12:30:00+00:00",
                     report("h1", "2.0.0", releases=(("1.0.0", "good"), ("2.1.0", "staged"))),
                     report("h2", "2.0.0"))
    recorded = {"h1": ("2.0.0", "2026-11-29T12:10:00+00:00"), "h2": ("2.0.0", ""), "h3": (None, "")}
    rows = on_host_rows(HOSTS, recorded, insp, None)
    h1, h2, h3 = rows
    assert (h1.on_host, h1.on_host_status, h1.differs) == ("2.0.0", "good", False)
    assert h1.releases == ("1.0.0 (good)", "2.1.0 (staged)")
    assert (h1.lb_status, h1.lb_source, h1.read_at) == ("UP", "refresh", "2026-11-29T12:30:00+00:00")
    assert h2.datacenter == "fra / dc2" and h1.datacenter == "dc1"
    # A host the refresh did not report: nothing is made up.
    assert (h3.on_host, h3.lb, h3.lb_source, h3.read_at) == (None, "", "", "")


def test_a_host_running_another_version_than_recorded_stands_out_only_if_read_after_the_record() -> None:
    insp = inspected("2026-11-29T12:30:00+00:00", report("h1", "1.0.0"), report("h2", "1.0.0"))
    recorded = {"h1": ("2.0.0", "2026-11-29T12:10:00+00:00"),   # changed by hand after the release
                "h2": ("2.0.0", "2026-11-29T12:45:00+00:00")}   # released after the refresh read it
    h1, h2, _ = on_host_rows(HOSTS, recorded, insp, None)
    assert h1.differs and h1.on_host == "1.0.0"
    assert not h2.differs


def test_the_live_lb_state_wins_over_the_refresh_and_says_so() -> None:
    insp = inspected("2026-11-29T12:30:00+00:00", report("h1", "2.0.0"), report("h2", "2.0.0"))
    live = LiveLB({"h1": "MAINT (admin maint, 0 sessions)"}, "live from haproxy")
    h1, h2, h3 = on_host_rows(HOSTS, {}, insp, live)
    assert (h1.lb_status, h1.lb_source, h1.lb) == ("MAINT", "live", "MAINT (admin maint, 0 sessions)")
    assert (h2.lb_status, h2.lb_source) == ("UP", "refresh")  # not in the live answer
    assert h3.lb_status == ""


def test_an_unreachable_host_shows_why_and_no_version() -> None:
    why = "ssh: <b>connection refused</b> (port 2222)"
    insp = inspected("2026-11-29T12:30:00+00:00", report("h1", None, error=why, lb="unreadable (x)"))
    h1, _, _ = on_host_rows(HOSTS, {"h1": ("2.0.0", "")}, insp, None)
    assert (h1.on_host, h1.read_error, h1.differs) == (None, why, False)
    assert h1.lb_status == "unreadable"


def test_never_refreshed() -> None:
    rows = on_host_rows(HOSTS, {}, None, LiveLB(None, "no load balancer"))
    assert all(r.on_host is None and r.lb == "" and r.read_at == "" for r in rows)


@pytest.mark.parametrize("words, status", [
    ("UP (admin ready, 0 sessions, check L7OK)", "UP"), ("UP 1/2 (admin ready)", "UP"),
    ("MAINT (admin maint)", "MAINT"), ("DRAIN (admin drain, 3 sessions)", "DRAIN"),
    ("state unknown (the load balancer does not report it)", "unknown"),
    ("unreadable (haproxy runtime API unreachable)", "unreadable"), ("", ""),
])
def test_lb_status_is_the_first_word_of_the_lb_description(words: str, status: str) -> None:
    assert lb_status(words) == status


def test_datacenter_names_each_part_once() -> None:
    assert datacenter("dc1", {"datacenter": "dc1"}) == "dc1"
    assert datacenter("", {"datacenter": "fra"}) == "fra"
    assert datacenter("", {}) == ""


def test_the_refresh_summary_says_whether_it_runs_and_when_hosts_were_read() -> None:
    running = InspectRecord("tars_inspect__demo", "manual__3", "running", T, None, "manual__2",
                            {"read_at": "2026-11-29T12:30:00+00:00", "hosts": []})
    assert running.summary() == {"dag_id": "tars_inspect__demo", "run_id": "manual__3",
                                 "state": "running", "running": True,
                                 "read_at": "2026-11-29T12:30:00+00:00", "read_run_id": "manual__2"}
