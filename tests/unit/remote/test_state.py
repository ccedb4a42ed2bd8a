from __future__ import annotations

import json

import pytest

from tars_operators.steps.state import HostState, ReleaseMeta, parse_state, previous_good, select_prunable

pytestmark = pytest.mark.unit


def meta(version: str, status: str, activated: str | None = None, installed: str = "2024-01-01T00:00:00Z") -> ReleaseMeta:
    return ReleaseMeta(version=version, sha256="a" * 64, installed_at=installed, activated_at=activated,
                       status=status)  # type: ignore[arg-type]


def test_parse_state_output() -> None:
    body = json.dumps({"version": "1.0.0", "sha256": "b" * 64, "status": "good", "activated_at": "2024-01-01T00:00:00Z"})
    out = (f"@@current releases/1.0.0\n@@release 1.0.0\n{body}\n\n@@release 2.0.0\n\n"
           "@@release bad;name\n{}\n")
    state = parse_state(out)
    assert state.current == "1.0.0"
    assert [(r.version, r.status) for r in state.releases] == [("1.0.0", "good"), ("2.0.0", "unknown")]


def test_previous_good_is_the_latest_activated_good_other_than_excluded() -> None:
    state = HostState("3.0.0", [meta("1.0.0", "good", "2024-01-01T00:00:00Z"),
                                meta("2.0.0", "good", "2024-02-01T00:00:00Z"),
                                meta("2.5.0", "failed", "2024-02-15T00:00:00Z"),
                                meta("3.0.0", "staged", "2024-03-01T00:00:00Z")])
    assert previous_good(state, exclude="3.0.0") == "2.0.0"
    assert previous_good(state, exclude="2.0.0") == "1.0.0"
    assert previous_good(HostState(None, [])) is None


def test_prune_keeps_n_good_and_current_and_new_staged() -> None:
    state = HostState("5.0.0", [
        meta("1.0.0", "good", "2024-01-01T00:00:00Z"), meta("2.0.0", "good", "2024-02-01T00:00:00Z"),
        meta("3.0.0", "good", "2024-03-01T00:00:00Z"), meta("4.0.0", "failed", "2024-03-15T00:00:00Z"),
        meta("5.0.0", "failed", "2024-04-01T00:00:00Z"),
        meta("0.9.0", "staged", installed="2023-12-01T00:00:00Z"),
        meta("6.0.0", "staged", installed="2024-05-01T00:00:00Z"),
        ReleaseMeta(version="odd"),
    ])
    assert select_prunable(state, keep=2) == ["0.9.0", "1.0.0", "4.0.0"]


def test_prune_never_removes_current_even_if_old() -> None:
    state = HostState("1.0.0", [meta("1.0.0", "good", "2024-01-01T00:00:00Z"),
                                meta("2.0.0", "good", "2024-02-01T00:00:00Z"),
                                meta("3.0.0", "good", "2024-03-01T00:00:00Z")])
    assert select_prunable(state, keep=2) == []
