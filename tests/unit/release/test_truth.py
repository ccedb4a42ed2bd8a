"""The end-of-run truth: which hosts are not where a run says, and notes that keep them."""

from __future__ import annotations

import pytest

from tars_operators.release.machine import StageOutcome
from tars_operators.release.notes import compose, fit_note
from tars_operators.release.truth import HostTruth, problems, repair_hint

pytestmark = pytest.mark.unit

UP = "UP (admin ready, 0 sessions, check L7OK)"


def t(host: str, current: str | None, status: str = "good", *, up: bool = True, run: str = "r1",
      error: str = "") -> HostTruth:
    return HostTruth(host, current, status, run, UP if up else "DRAIN (admin drain)", up, error)


@pytest.mark.parametrize("truth, want, expected", [
    (t("h1", "2.0.0"), "2.0.0", []),
    (t("h1", "1.0.0"), "2.0.0", ["h1: runs 1.0.0, not 2.0.0"]),
    (t("h1", "2.0.0", up=False), "2.0.0", ["h1: NOT IN ROTATION (DRAIN (admin drain))"]),
    (t("h1", "1.0.0", up=False), "2.0.0",
     ["h1: runs 1.0.0, not 2.0.0; NOT IN ROTATION (DRAIN (admin drain))"]),
    (t("h1", "1.0.0", "adopted"), None, []),
    (t("h1", "2.0.0", "failed"), None, ["h1: runs 2.0.0 (failed), not a known good release"]),
    (t("h1", None, None), None, ["h1: runs nothing (no metadata), not a known good release"]),
    # failed within budget, unreachable over SSH, still UP: it serves what it had
    (t("h1", None, None, error="cannot connect"), None, []),
    (t("h1", None, None, error="cannot connect"), "2.0.0", ["h1: could not be read (cannot connect)"]),
    (t("h1", None, None, up=False, error="cannot connect"), None,
     ["h1: could not be read (cannot connect); load balancer: DRAIN (admin drain)"]),
])
def test_problems_name_the_host_what_it_runs_and_its_rotation(truth: HostTruth, want: str | None,
                                                              expected: list[str]) -> None:
    assert problems({"h1": truth}, {"h1": want}) == expected


def test_finished_by_needs_the_version_marked_good_by_this_run_and_up() -> None:
    assert t("h1", "2.0.0").finished_by("2.0.0", "r1")
    assert not t("h1", "2.0.0", run="r0").finished_by("2.0.0", "r1")  # another run's
    assert not t("h1", "2.0.0", "staged").finished_by("2.0.0", "r1")  # never marked good
    assert not t("h1", "2.0.0", up=False).finished_by("2.0.0", "r1")  # not back in rotation
    assert not t("h1", "1.0.0").finished_by("2.0.0", "r1")


def test_repair_hint_is_one_command() -> None:
    assert repair_hint("demo", ["host01", "host02"]).startswith(
        "repair: tars rollback demo --hosts host01,host02 --reason")


def test_a_long_note_keeps_its_first_lines_and_says_how_many_were_cut() -> None:
    details = ["host01: NOT IN ROTATION (DRAIN)", "repair: tars rollback demo --hosts host01"]
    details += [f"host{i:03d}: restored to 1.0.0, in rotation" for i in range(100)]
    note = compose("FAILED: hosts not where the release says · 0/100 hosts on 2.0.0", "ci",
                   "e2e", "T-1", details)
    fitted = fit_note(note)
    assert len(note) > 1000 >= len(fitted)
    assert fitted.startswith(note[:300])
    assert "host01: NOT IN ROTATION" in fitted and "repair: tars rollback" in fitted
    assert fitted.splitlines()[-1].startswith("- … ") and "see the task log" in fitted
    assert fit_note("short") == "short"


def test_reconcile_counts_a_finished_host_whose_report_was_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    from tars_operators.release import truth

    seen = {"h1": t("h1", "2.0.0"), "h2": t("h2", "2.0.0", "staged", up=False)}
    asked: list[list[str]] = []
    monkeypatch.setattr(truth, "read_truth", lambda spec, names, log=None: (
        asked.append(list(names)) or {n: seen[n] for n in names}))
    outcomes = [StageOutcome("fort", ("h0",), ("h0",), ()),
                StageOutcome("batch_1", ("h1", "h2"), (), ("h1", "h2"), (),
                             (("h1", "h1 failed@report"), ("h2", "h2 failed@health")))]
    fixed, late = truth.reconcile(None, outcomes, "2.0.0", "r1")  # type: ignore[arg-type]
    assert asked == [["h1", "h2"]]  # only failed hosts are read
    assert late == ["h1"]
    assert fixed[1].succeeded == ("h1",) and fixed[1].failed == ("h2",)
    assert fixed[1].why == (("h2", "h2 failed@health"),)
    assert fixed[0] == outcomes[0]
    assert truth.reconcile(None, [outcomes[0]], "2.0.0", "r1") == ([outcomes[0]], [])  # type: ignore[arg-type]


def test_a_task_that_died_without_a_reason_is_explained_from_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from tars_operators.release import truth

    dead = replace(t("h1", "1.0.0", up=False), phase="activating (tars_deploy__demo run r1)")
    monkeypatch.setattr(truth, "read_truth", lambda spec, names, log=None: {"h1": dead})
    outcomes = [StageOutcome("fort", ("h1",), (), ("h1",), (), (("h1", "see the task log"),))]
    fixed, late = truth.reconcile(None, outcomes, "2.0.0", "r1")  # type: ignore[arg-type]
    assert late == []
    (why,) = fixed[0].why
    assert why[1] == ("h1: its task died without a report in phase activating (tars_deploy__demo "
                      "run r1) (see the task log); the host runs 1.0.0 (good); load balancer: "
                      "DRAIN (admin drain)")


def test_a_dead_task_is_not_said_to_have_died_in_the_phase_its_rollback_wrote(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rollback report reads the lease after the run's own rollback re-entered it."""
    from dataclasses import replace

    from tars_operators.release import truth

    for phase in ("restoring", "done"):
        after = replace(t("h1", "1.0.0"), phase=f"{phase} (tars_deploy__demo run r1)")
        monkeypatch.setattr(truth, "read_truth", lambda spec, names, log=None, a=after: {"h1": a})
        outcomes = [StageOutcome("fort", ("h1",), (), ("h1",), (), (("h1", "see the task log"),))]
        (why,) = truth.reconcile(None, outcomes, "2.0.0", "r1")[0][0].why  # type: ignore[arg-type]
        assert why[1].startswith("h1: its task died without a report (see the task log); the "
                                 "host runs 1.0.0 (good)"), why


def test_a_host_out_of_rotation_that_another_run_holds_is_named_not_failed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs at once on other hosts of one fleet: a host the other run has drained is that
    run's to bring back; this run names it and does not fail for it."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    from tars_operators.release import restore
    from tars_operators.steps import traffic
    from tars_operators.steps.lease import Holder

    mine, other = Holder("tars_deploy__a", "r1"), Holder("tars_deploy__b", "r2")
    spec = SimpleNamespace(config=SimpleNamespace(traffic=SimpleNamespace(provider="haproxy")),
                           host=lambda n: n)
    monkeypatch.setattr(restore, "_lb", lambda s: nullcontext())
    monkeypatch.setattr(traffic, "rotation_report", lambda lb, s, hosts: SimpleNamespace(
        error="", not_in_rotation=[("h2", "DRAIN (admin drain)"), ("h3", "MAINT")]))
    asked: list[list[str]] = []

    def held(s: object, names: list[str], holder: Holder) -> dict[str, object]:
        asked.append(names)
        assert holder == mine
        return {"h2": SimpleNamespace(holder=other, phase="out of rotation")}

    monkeypatch.setattr(restore, "_held_by_others", held)
    out, elsewhere = restore.rotation_problems(spec, ["h1", "h2", "h3"], mine=mine)  # type: ignore[arg-type]
    assert asked == [["h2", "h3"]]  # only hosts out of rotation are read
    assert out == ["h3: MAINT"]
    assert elsewhere == ["h2: out of rotation (DRAIN (admin drain)) while tars_deploy__b run r2 "
                         "holds it (phase out of rotation): that run brings it back and reports "
                         "on it"]
    # Without a holder to compare (no run), every host out of rotation is a problem.
    assert restore.rotation_problems(spec, ["h2", "h3"]) == (  # type: ignore[arg-type]
        ["h2: DRAIN (admin drain)", "h3: MAINT"], [])


def test_the_leases_of_hosts_out_of_rotation_are_read_at_once_not_one_after_another(monkeypatch):
    """At a run's end, every host out of rotation has its lease read to tell another run's
    hosts from this run's problems. Read one after another, an app down on hundreds of hosts
    (or hosts that time out) would hold finalize for minutes: the reads run together, as the
    truth read's do. A host that cannot be read stays this run's problem (not held)."""
    import threading
    from contextlib import contextmanager
    from types import SimpleNamespace

    from tars_operators.errors import RemoteError
    from tars_operators.hooks import ssh
    from tars_operators.release import restore
    from tars_operators.steps import lease as lease_mod
    from tars_operators.steps import state as state_mod
    from tars_operators.steps.lease import Holder

    mine, other = Holder("tars_deploy__a", "r1"), Holder("tars_deploy__b", "r2")
    names = [f"h{i}" for i in range(8)]
    together = threading.Barrier(len(names))  # passes only when all 8 reads are in flight

    @contextmanager
    def open_session(spec: object, host: str):
        together.wait(timeout=10)
        if host == "h7":
            raise RemoteError(host, "connect", "timed out")
        yield SimpleNamespace(host=host)

    holders = {"h1": other, "h2": mine, "h3": other}
    monkeypatch.setattr(ssh, "open_session", open_session)
    monkeypatch.setattr(state_mod, "layout_for", lambda spec, host: host)
    monkeypatch.setattr(lease_mod, "read_lease", lambda session, layout: (
        SimpleNamespace(holder=holders[layout], phase="out of rotation")
        if layout in holders else None))
    spec = SimpleNamespace(host=lambda n: n)
    held = restore._held_by_others(spec, names, mine)  # type: ignore[arg-type]
    assert sorted(held) == ["h1", "h3"]  # not this run's own lease, not the unreadable h7
    assert restore._held_by_others(spec, [], mine) == {}  # type: ignore[arg-type]
