"""How a stage's hosts are spread over release task instances (``strategy.hosts_per_task``)."""

from __future__ import annotations

import pytest

from tars_operators.config.schema import AppConfig
from tars_operators.plan.capacity import task_threads
from tars_operators.plan.tasks import MAX_TASKS, chunk, host_index, hosts_per_task, task_items

pytestmark = pytest.mark.unit


def names(n: int) -> list[str]:
    return [f"host{i:04d}" for i in range(1, n + 1)]


@pytest.mark.parametrize("size", [1, 2, 3])
def test_auto_keeps_one_task_per_host_for_small_stages(size: int) -> None:
    assert task_items("auto", names(size)) == names(size)  # plain names: the tasks of today


@pytest.mark.parametrize(("size", "tasks", "biggest"), [
    (4, 2, 2), (6, 2, 3), (7, 2, 4), (9, 2, 5), (20, 2, 10), (30, 2, 15), (50, 2, 25), (148, 2, 74),
    (150, 2, 75), (151, 3, 51), (200, 3, 67), (600, 8, 75), (1779, 8, 223),
    (5000, 8, 625),
])
def test_auto_puts_bigger_stages_in_two_to_eight_tasks(size: int, tasks: int, biggest: int) -> None:
    items = task_items("auto", names(size))
    assert (len(items), max(len(i) for i in items)) == (tasks, biggest)
    assert [h for i in items for h in i] == names(size)  # every host once, in release order


@pytest.mark.parametrize("size", [1025, 5000, 20000])
def test_no_stage_needs_more_than_airflows_1024_mapped_tasks(size: int) -> None:
    for setting in ("auto", 1, 3):
        items = task_items(setting, names(size))  # type: ignore[arg-type]
        assert len(items) <= MAX_TASKS
        assert sum(1 if isinstance(i, str) else len(i) for i in items) == size


def test_a_set_number_is_kept_and_the_last_task_takes_the_rest() -> None:
    assert hosts_per_task(10, 95) == 10
    assert [len(c) for c in chunk(names(95), 10)] == [10] * 9 + [5]
    assert task_items(1, names(20)) == names(20)


def test_host_index_says_which_task_works_on_each_host() -> None:
    items = [["a", "b"], ["c"]]
    assert host_index(items) == {"a": (0, 0), "b": (0, 1), "c": (1, 2)}
    assert host_index(["a", "b"]) == {"a": (0, 0), "b": (1, 1)}


def test_threads_stay_within_parallel_and_the_capacity_floor() -> None:
    # 8 tasks of a stage share strategy.parallel 32: 4 hosts at once each
    assert task_threads(32, 8, 25, fleet=200, floor=0) == 4
    assert task_threads(32, 2, 10, fleet=30, floor=0) == 10  # never more than the task's hosts
    assert task_threads(4, 100, 10, fleet=1000, floor=0) == 1  # more tasks than parallel
    assert task_threads(32, 1, 25, fleet=30, floor=25) == 5  # the floor lets 5 out at once
    # traffic.pool: each task holds one slot of the load balancer's pool, so one host out
    assert task_threads(32, 2, 25, fleet=200, floor=0, pooled=True) == 1


def test_the_setting_is_auto_by_default_and_refuses_zero() -> None:
    base = {"app": {"name": "x", "owner": "t"},
            "artifact": {"url": "http://a/{{ version }}.tgz", "checksum": {"url": "{{ url }}.s"}},
            "hosts": {"vars": {}}, "install": {"deploy_root": "/srv/x"}, "service": {"start": "true", "stop": "true"}}
    assert AppConfig.model_validate(base).strategy.hosts_per_task == "auto"
    assert AppConfig.model_validate(
        {**base, "strategy": {"hosts_per_task": 20}}).strategy.hosts_per_task == 20
    with pytest.raises(Exception, match="hosts_per_task"):
        AppConfig.model_validate({**base, "strategy": {"hosts_per_task": 0}})
