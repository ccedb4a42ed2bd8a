"""The release state machine and the gate's decision table, alone (no Airflow)."""

from __future__ import annotations

import pytest

from tars_operators.release.machine import (
    FINALIZE, HALT, HOST_TRANSITIONS, RELEASE_TRANSITIONS, RESTORE, ROLLBACK_HOSTS, ROLLBACK_PLAN,
    Brake, Decision, GateDecision, GateInput, HostPhase, HostTrack, Release, StageOutcome,
    approval_choices, check_transition, decide, enter_id, gate_id, in_group, is_enter_task,
    is_release_task, is_restore_task, release_after_gate, release_id, route, stage_of, topology,
)

pytestmark = pytest.mark.unit


def gate(failed=(), ok=("h1", "h2"), untouched=(), *, total=None, stage_budget=0,
         total_budget=0, on_failure="rollback", last=False, brake=None) -> GateInput:
    hosts = tuple(ok) + tuple(failed) + tuple(untouched)
    outcome = StageOutcome("batch_1", hosts, tuple(ok), tuple(failed), tuple(untouched))
    return GateInput(outcome, len(failed) if total is None else total, stage_budget,
                     total_budget, on_failure, last, brake)


@pytest.mark.parametrize("g, expected", [
    (gate(), Decision.CONTINUE),
    (gate(last=True), Decision.FINISH),
    (gate(failed=("h3",)), Decision.ROLLBACK),
    (gate(failed=("h3",), on_failure="halt"), Decision.HALT),
    (gate(failed=("h3",), stage_budget=1, total_budget=1), Decision.CONTINUE),
    (gate(failed=("h3",), stage_budget=1, total_budget=1, total=2), Decision.ROLLBACK),
    (gate(brake=Brake("ann", "db migration", "t")), Decision.WAIT),
    (gate(brake=Brake("ann", "stop", "t", action="rollback")), Decision.ROLLBACK),
    (gate(untouched=("h3",)), Decision.ROLLBACK),
    (gate(failed=("h3",), brake=Brake("ann", "x", "t")), Decision.ROLLBACK),  # budget first
])
def test_gate_decisions(g: GateInput, expected: Decision) -> None:
    assert decide(g).decision is expected


def test_gate_reasons_name_hosts_and_budgets() -> None:
    reason = decide(gate(failed=("h3", "h4"), stage_budget=1, total_budget=5)).reason
    assert reason == "batch_1: 2 host(s) failed (h3, h4); over the stage budget 1"
    reason = decide(gate(failed=("h3",), stage_budget=1, total_budget=1, total=2)).reason
    assert "over the release budget 1 (2 failed in all)" in reason
    assert decide(gate(brake=Brake("ann", "db migration", "t"))).reason == (
        "brake pulled by ann (db migration); holding after batch_1")


def test_every_state_is_reachable_and_terminal_states_end() -> None:
    for table, start in ((RELEASE_TRANSITIONS, Release.PLANNED), (HOST_TRANSITIONS, HostPhase.PENDING)):
        seen, todo = {start}, [start]
        while todo:
            for nxt in table[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen == set(table), f"unreachable: {set(table) - seen}"
    for end in (Release.SUCCEEDED, Release.ROLLED_BACK, Release.HALTED, Release.REJECTED):
        assert RELEASE_TRANSITIONS[end] == frozenset()


def test_illegal_transitions_are_refused() -> None:
    check_transition(RELEASE_TRANSITIONS, Release.AT_GATE, Release.BRAKED)
    with pytest.raises(ValueError, match="illegal transition succeeded → running stage"):
        check_transition(RELEASE_TRANSITIONS, Release.SUCCEEDED, Release.RUNNING_STAGE)
    with pytest.raises(ValueError):
        check_transition(HOST_TRANSITIONS, HostPhase.PENDING, HostPhase.IN_ROTATION)


def test_topology_places_bake_and_approval_between_gate_and_next_stage() -> None:
    nodes = topology(["fort", "batch_1", "batch_2"], {"fort"}, bake=True)
    fort, b1, b2 = nodes
    assert fort.after_gate == ("fort.bake", "fort.approve")
    assert fort.continue_target == "fort.bake" and fort.next_enter == "batch_1.enter"
    assert b1.after_gate == ("batch_1.bake",)
    assert b2.after_gate == () and b2.next_enter == FINALIZE
    assert b2.choices[Decision.ROLLBACK] == ROLLBACK_PLAN and b2.choices[Decision.HALT] == HALT
    assert all(n.choices[Decision.FINISH] == FINALIZE for n in nodes)


@pytest.mark.parametrize(("decision", "remaining", "had_hosts", "target", "release"), [
    (Decision.CONTINUE, True, True, "fort.bake", Release.BAKING),
    (Decision.CONTINUE, True, False, "batch_1.enter", Release.RUNNING_STAGE),  # empty: no bake
    (Decision.CONTINUE, False, True, FINALIZE, Release.SUCCEEDED),  # nothing left to release
    (Decision.FINISH, False, True, FINALIZE, Release.SUCCEEDED),
    (Decision.ROLLBACK, True, True, ROLLBACK_PLAN, Release.ROLLING_BACK),
    (Decision.HALT, True, True, HALT, Release.HALTED),
    (Decision.WAIT, True, True, None, Release.BRAKED),
])
def test_the_gate_routes_through_the_machine(decision: Decision, remaining: bool, had_hosts: bool,
                                            target: str | None, release: Release) -> None:
    fort = topology(["fort", "batch_1"], {"fort"}, bake=True)[0]
    got = route(fort, GateDecision(decision, "why"), remaining=remaining,
                stage_had_hosts=had_hosts)
    assert got == target
    assert release_after_gate(fort, got) is release


def test_approval_after_the_gate_is_awaiting_approval() -> None:
    fort = topology(["fort", "batch_1"], {"fort"}, bake=False)[0]
    target = route(fort, GateDecision(Decision.CONTINUE, "ok"), remaining=True, stage_had_hosts=True)
    assert target == "fort.approve"
    assert release_after_gate(fort, target) is Release.AWAITING_APPROVAL


def test_task_ids_are_named_once_and_read_back() -> None:
    node = topology(["batch_1"], set(), bake=False)[0]
    assert (node.enter, node.release, node.gate) == (
        enter_id("batch_1"), release_id("batch_1"), gate_id("batch_1"))
    assert [in_group(t) for t in (node.enter, node.release, node.gate)] == [
        "enter", "release", "gate"]
    assert in_group(ROLLBACK_HOSTS) == "hosts" and in_group(RESTORE) == RESTORE
    assert stage_of(node.release) == "batch_1" and stage_of(node.enter) == "batch_1"
    assert stage_of(ROLLBACK_HOSTS) == stage_of(RESTORE) == "rollback"
    assert is_release_task(node.release) and not is_release_task(node.gate)
    assert is_enter_task(node.enter) and is_restore_task(RESTORE) and is_restore_task(ROLLBACK_HOSTS)


def test_a_host_track_refuses_a_skipped_phase_and_names_the_host() -> None:
    track = HostTrack("web1")
    track.after_step("stage")
    track.after_step("pull_out")
    with pytest.raises(ValueError, match="web1: illegal transition out of rotation → in rotation"):
        track.after_step("pull_in")
    assert track.as_list() == ["pending", "staged", "out of rotation"]
    assert HostTrack.replay("web1", ["stage", "pull_out", "activate", "health", "smoke", "mark"]
                            ).phase is HostPhase.HEALTHY


def test_an_approval_leads_on_back_or_to_halt_and_the_release_table_allows_each() -> None:
    choices = approval_choices("batch_1.enter")
    assert choices == {"Continue": "batch_1.enter", "Roll back": ROLLBACK_PLAN, "Halt": HALT}
    for new in (Release.RUNNING_STAGE, Release.ROLLING_BACK, Release.HALTED):
        check_transition(RELEASE_TRANSITIONS, Release.AWAITING_APPROVAL, new)


def test_broken_flow_names_the_stage_tasks_that_failed_not_hosts_or_ends() -> None:
    from tars_operators.release.machine import broken_flow

    states = {"prepare": "success", "fort.enter": "success", "fort.release_0": "success",
              "fort.gate": "success", "fort.approve": "failed",
              "batch_1.enter": "upstream_failed", "batch_1.release_0": "upstream_failed",
              "batch_1.release_1": "failed", "batch_1.gate": "skipped", "rollback.plan": "failed",
              "halt": "upstream_failed", "finalize": "running"}
    assert broken_flow(states, ["fort", "batch_1"]) == ["fort.approve"]
    assert broken_flow({**states, "fort.approve": "success", "batch_1.enter.dc2": "failed",
                        "batch_1.gate": "failed"}, ["fort", "batch_1"]) == [
        "batch_1.enter.dc2", "batch_1.gate"]
    assert broken_flow({"fort.approve": "failed"}, ["batch_1"]) == []  # not this plan's stage
