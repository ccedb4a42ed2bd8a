"""Where a rollback takes a host: one table, the rule the rollback tasks and plans all use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tars_operators.release.rollback_target import RollbackTarget, latest_release_run, resolve_rollback
from tars_operators.steps.state import HostState, ReleaseMeta

pytestmark = pytest.mark.unit
T1, T2, T3, T4 = "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z"


def rel(version: str, status: str, at: str | None = None, *, run: str | None = None,
        replaced: str | None = None, restored: str | None = None, derived: bool = False) -> ReleaseMeta:
    extra: dict[str, Any] = {}
    if run:
        extra.update(activated_run_id=run, replaced=replaced)
    if restored:
        extra.update(restored_by_run="rb", restored_at=restored)
    return ReleaseMeta(version, activated_at=at, status=status, extra=extra, derived=derived)  # type: ignore[arg-type]


def host(current: str | None, *releases: ReleaseMeta, foreign: str | None = None) -> HostState:
    return HostState(current, list(releases), current_path=foreign)


# A fleet history: 1.0.0 (good, T1) → run r2 activated 2.0.0 (good, T2) → run r3 activates 3.0.0.
BASE = (rel("1.0.0", "good", T1), rel("2.0.0", "good", T2, run="r2", replaced="1.0.0"))
CASES: list[tuple[str, HostState, dict[str, Any], tuple[str | None, bool]]] = [
    ("undo the run that switched it: back to what it replaced",
     host("3.0.0", *BASE, rel("3.0.0", "good", T3, run="r3", replaced="2.0.0")),
     {"undo_run": "r3", "undo_version": "3.0.0"}, ("2.0.0", True)),
    ("the run's own failed release: back to what it replaced",
     host("3.0.0", *BASE, rel("3.0.0", "failed", T3, run="r3", replaced="2.0.0")),
     {"undo_run": "r3", "undo_version": "3.0.0"}, ("2.0.0", True)),
    ("run never switched this host (killed before activation): stays",
     host("2.0.0", *BASE, rel("3.0.0", "staged")),
     {"undo_run": "r3", "undo_version": "3.0.0"}, ("2.0.0", False)),
    ("untouched host, app rollback of r3 (version found from the run): stays",
     host("2.0.0", *BASE), {"undo_run": "r3"}, ("2.0.0", False)),
    ("second rollback of the same run: already back, stays",
     host("2.0.0", rel("1.0.0", "good", T1), rel("2.0.0", "good", T2, run="r2", replaced="1.0.0", restored=T4),
          rel("3.0.0", "failed", T3, run="r3", replaced="2.0.0")),
     {"undo_run": "r3"}, ("2.0.0", False)),
    ("same version current but switched by another run: stays",
     host("2.0.0", *BASE), {"undo_run": "r9", "undo_version": "2.0.0"}, ("2.0.0", False)),
    ("replaced is not a target (failed): most recent good other than current",
     host("3.0.0", rel("1.0.0", "good", T1), rel("2.0.0", "failed", T2),
          rel("3.0.0", "good", T3, run="r3", replaced="2.0.0")),
     {"undo_run": "r3"}, ("1.0.0", True)),
    ("killed right after the switch (no activation recorded, staged): previous good",
     host("3.0.0", *BASE, rel("3.0.0", "staged")), {"undo_run": "r3", "undo_version": "3.0.0"}, ("2.0.0", True)),
    ("current unknown-status on a repair: previous good",
     host("3.0.0", *BASE, rel("3.0.0", "unknown")), {}, ("2.0.0", True)),
    ("repair of a good current: stays (restart and rotation are restore_host's job)",
     host("2.0.0", *BASE), {}, ("2.0.0", False)),
    ("adopted first release, broken release on top: back to the adopted one",
     host("2.0.0-broken", rel("1.0.0", "adopted", None), rel("2.0.0-broken", "failed", T3, run="r3",
                                                                 replaced="1.0.0")),
     {"undo_run": "r3", "undo_version": "2.0.0-broken"}, ("1.0.0", True)),
    ("adopted current (derived, no metadata), nothing to undo: stays",
     host("1.0.0", rel("1.0.0", "adopted", derived=True)), {"undo_run": "r3"}, ("1.0.0", False)),
    ("restore time counts: the release current most recently wins over a later activation",
     host("4.0.0", rel("1.0.0", "good", T1, restored=T4), rel("2.0.0", "good", T2), rel("4.0.0", "staged")),
     {}, ("1.0.0", True)),
    ("current outside releases/: most recent good",
     host(None, *BASE, foreign="/opt/elsewhere"), {}, ("2.0.0", True)),
    ("explicit version that is good: goes there, even when the run did not touch it",
     host("2.0.0", *BASE), {"undo_run": "r3", "explicit": "1.0.0"}, ("1.0.0", True)),
    ("explicit version already current: stays",
     host("1.0.0", *BASE), {"explicit": "1.0.0"}, ("1.0.0", False)),
]
REFUSED: list[tuple[str, HostState, dict[str, Any], str]] = [
    ("first release ever failed", host("1.0.0", rel("1.0.0", "failed", T1, run="r1")),
     {"undo_run": "r1"}, "no good or adopted release"),
    ("explicit version not on the host", host("2.0.0", *BASE), {"explicit": "0.9.0"}, "0.9.0 is not on this host"),
    ("explicit version failed on the host", host("2.0.0", *BASE, rel("3.0.0", "failed")),
     {"explicit": "3.0.0"}, "3.0.0 is failed on this host"),
    ("nothing at all", host(None), {}, "current is nothing"),
]


@pytest.mark.parametrize(("state", "kwargs", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rollback_target(state: HostState, kwargs: dict[str, Any], expected: tuple[str | None, bool]) -> None:
    target = resolve_rollback(state, **kwargs)
    assert (target.version, target.move) == expected, target.why
    assert target.current == state.current and target.why


@pytest.mark.parametrize(("state", "kwargs", "message"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_rollbacks_say_why(state: HostState, kwargs: dict[str, Any], message: str) -> None:
    target = resolve_rollback(state, **kwargs)
    assert target.refused and not target.move and message in target.why
    assert "NOT rolled back" in target.line("host01")


def test_resolution_applied_is_a_fixed_point() -> None:
    """Applying the target (what restore_host does) and resolving again moves nothing."""
    for _, state, kwargs, (version, move) in CASES:
        if not move or version is None:
            continue
        after = HostState(version, [r.with_(extra={**r.extra, "restored_at": T4}) if r.version == version else r
                                    for r in state.releases])
        again = resolve_rollback(after, **kwargs)
        assert (again.version, again.move) == (version, False), again.why


def test_latest_release_run_ignores_restores_and_unactivated_releases() -> None:
    a = host("2.0.0", rel("1.0.0", "good", T1, restored=T4), rel("2.0.0", "good", T2, run="r2", replaced="1.0.0"))
    b = host("1.0.0", rel("1.0.0", "good", T1, restored=T4), rel("3.0.0", "failed", T3, run="r3", replaced="1.0.0"))
    assert latest_release_run([a, b]).run_id == "r3"  # type: ignore[union-attr]
    assert latest_release_run([a]).version == "2.0.0"  # type: ignore[union-attr]
    assert latest_release_run([host("1.0.0", rel("1.0.0", "adopted", derived=True))]) is None


def test_targets_travel_as_xcom_dicts() -> None:
    target = resolve_rollback(CASES[0][1], **CASES[0][2])
    assert RollbackTarget.from_dict(target.as_dict()) == target
    assert target.line("host01") == "host01: 3.0.0 → 2.0.0 (undoing 3.0.0, switched here by r3; back to what it replaced)"


def test_rollback_dag_form_stays_compatible_and_takes_an_optional_version(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    from tars_operators.factory.builder import build_rollback_dag
    from tests.unit.factory.test_dag_shape import spec_for

    dag = build_rollback_dag(spec_for(tmp_path, hosts=3))
    params = dag.params
    assert set(params.keys()) == {"reason", "ticket", "hosts", "version"}  # what `tars rollback` sends, + version
    assert params["version"] is None
    version = params.get_param("version")
    assert version.resolve("2.0.0") == "2.0.0" and version.resolve(None) is None
    with pytest.raises(ParamValidationError):
        version.resolve("1.0;touch /tmp/x")
    assert dag.get_task("restore").max_active_tis_per_dagrun == 2
