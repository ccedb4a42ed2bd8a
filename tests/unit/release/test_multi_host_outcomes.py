"""Gates, finalize and the rollback plan count hosts, not tasks: a stage whose release task works
on several hosts per task instance (``strategy.hosts_per_task``) reports each host by its own
result (``release.runtime.stage_outcomes``), a one-host task as before."""

from __future__ import annotations

from typing import Any

import pytest

from tars_operators.plan.ramp import ReleasePlan, Stage
from tars_operators.plan.tasks import task_items
from tars_operators.release import runtime

pytestmark = pytest.mark.unit
TASK = "batch_1.release"


class FakeTI:
    """Airflow's task API as runtime reads it: task states and XComs by (task, key, map index)."""

    def __init__(self, states: dict[str, str], xcoms: dict[tuple[str, int], Any]) -> None:
        self.states, self.xcoms = states, xcoms

    def get_task_states(self, *, dag_id: str, run_ids: list[str], task_ids: list[str]) -> Any:
        return {run_ids[0]: self.states}

    def xcom_pull(self, *, task_ids: str, key: str = "return_value") -> Any:
        """Every map index's value (Airflow's slice), unwrapped when there is one."""
        found = [v for (k, _), v in sorted(self.xcoms.items()) if k == key]
        return found[0] if len(found) == 1 else (found or None)


class Run:
    run_id, dag_id = "r1", "tars_deploy__demo"


def plan(n: int) -> ReleasePlan:
    hosts = tuple(f"h{i:02d}" for i in range(n))
    return ReleasePlan("demo", (Stage("batch_1", 0, hosts),), (0,), 0, 0, n)


def result(host: str, state: str, **extra: Any) -> dict[str, Any]:
    return {"host": host, "state": state, "phase": "in rotation", "steps": [], **extra}


def outcome(ti: FakeTI, p: ReleasePlan, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(runtime, "task_spec", lambda context: None)  # auto, one queue
    return runtime.stage_outcomes({"ti": ti, "dag_run": Run()}, p)[0]  # type: ignore[arg-type]


def test_a_failed_task_of_several_hosts_counts_only_its_failed_host(monkeypatch: pytest.MonkeyPatch) -> None:
    p = plan(20)
    items = task_items("auto", p.hosts("batch_1"))
    assert len(items) == 2 and len(items[0]) == 10
    first, second = items
    xcoms = {
        ("host_results", 0): [result(h, "failed" if h == "h03" else "ok") for h in first],
        ("failure", 0): [{"host": "h03", "message": "h03 failed@health: 503 — host OUT OF ROTATION"}],
        ("host_results", 1): [result(h, "ok", skipped=True) if h == "h10" else result(h, "ok")
                              for h in second],
    }
    o = outcome(FakeTI({f"{TASK}_0": "failed", f"{TASK}_1": "success"}, xcoms), p, monkeypatch)
    assert o.failed == ("h03",)
    assert o.why == (("h03", "h03 failed@health: 503 — host OUT OF ROTATION"),)
    assert len(o.succeeded) == 19 and "h10" in o.succeeded  # skipped on a retry: it is released


def test_hosts_a_killed_task_never_finished_count_as_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    p = plan(20)
    first, _ = task_items("auto", p.hosts("batch_1"))
    pending = [result(h, "ok") for h in first[:4]] + [
        {"host": h, "state": "pending", "steps": []} for h in first[4:]]
    xcoms = {("host_results", 0): pending, ("host_results", 1): []}
    o = outcome(FakeTI({f"{TASK}_0": "failed", f"{TASK}_1": "running"}, xcoms), p, monkeypatch)
    assert o.succeeded == tuple(first[:4])
    assert o.failed == tuple(first[4:])
    assert dict(o.why)[first[4]] == "see the task log"


def test_a_running_task_counts_the_hosts_it_has_finished(monkeypatch: pytest.MonkeyPatch) -> None:
    p = plan(20)
    first, _ = task_items("auto", p.hosts("batch_1"))
    xcoms = {("host_results", 0): [result(first[0], "ok"), result(first[1], "untouched")]}
    o = outcome(FakeTI({f"{TASK}_0": "running", f"{TASK}_1": "running"}, xcoms), p, monkeypatch)
    assert (o.succeeded, o.untouched, o.failed) == ((first[0],), (first[1],), ())


def test_one_host_per_task_reads_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    p = plan(3)
    xcoms = {("return_value", 0): result("h00", "ok"),
             ("return_value", 2): {"host": "h02", "index": 2, "state": "untouched", "steps": []},
             ("failure", 1): {"host": "h01", "message": "h01 failed@stage: disk full"}}
    states = {f"{TASK}_0": "success", f"{TASK}_1": "failed", f"{TASK}_2": "success"}
    o = outcome(FakeTI(states, xcoms), p, monkeypatch)
    assert (o.succeeded, o.failed, o.untouched) == (("h00",), ("h01",), ("h02",))
    assert o.why == (("h01", "h01 failed@stage: disk full"),)


@pytest.mark.parametrize("n", [3, 20])  # one host per task, and several
def test_hosts_whose_task_never_started_are_untouched_not_failed(
        n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # The stage's entry (or the approval before it) failed: Airflow marks its host tasks
    # upstream_failed without running them. Those hosts were not touched: no "died" host, no
    # failure to count against a budget, nothing to restore.
    p = plan(n)
    indexes = range(len(task_items("auto", p.hosts("batch_1"))))
    o = outcome(FakeTI({f"{TASK}_{i}": "upstream_failed" for i in indexes}, {}), p, monkeypatch)
    assert (o.succeeded, o.failed, o.why) == ((), (), ())
    assert o.untouched == p.hosts("batch_1")


def test_one_stage_alone_reads_only_its_own_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host task's live note reads the settled stages once, then its own stage each time
    (``since``): the earlier stage's XComs are not read again."""
    monkeypatch.setattr(runtime, "task_spec", lambda context: None)
    p = ReleasePlan("demo", (Stage("fort", 0, ("h00",)), Stage("batch_1", 1, ("h01", "h02"))),
                    (0, 0), 0, 0, 3)
    read: list[str] = []

    class Counting(FakeTI):
        def xcom_pull(self, *, task_ids: str, **kw: Any) -> Any:
            read.append(task_ids)
            return super().xcom_pull(task_ids=task_ids, **kw)

    ti = Counting({"batch_1.release_0": "success", "batch_1.release_1": "failed"},
                  {("return_value", 0): result("h01", "ok"),
                   ("failure", 1): {"host": "h02", "message": "h02 failed@stage: disk full"}})
    context = {"ti": ti, "dag_run": Run()}
    (only,) = runtime.stage_outcomes(context, p, upto="batch_1", since="batch_1")  # type: ignore[arg-type]
    assert (only.stage, only.succeeded, only.failed) == ("batch_1", ("h01",), ("h02",))
    assert only.why == (("h02", "h02 failed@stage: disk full"),)
    assert set(read) == {"batch_1.release"}
    assert runtime.stage_outcomes(context, p, upto="fort", since="batch_1") == []  # type: ignore[arg-type]
