"""How a stage's hosts are spread over its release task instances (``strategy.hosts_per_task``).

A task instance costs a worker start, Airflow's import and a DAG parse whatever it does, so a big
stage runs several hosts per task (threads inside it, bounded by ``plan.capacity.task_threads``).
Small stages (up to 3 hosts: the fort, the first batches) keep one task per host.
Airflow maps at most ``core.max_map_length`` (1024) task instances: no stage goes past it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

MAX_TASKS = 1024  # Airflow's core.max_map_length default: the most instances one mapped task has
# auto: stages up to this many hosts keep one task per host. Every task start forks a worker,
# imports and parses the DAG whatever it does: 6 of them starting at once on a 2-core
# controller took 4.1 s for what 2 tasks of 3 hosts do in 2.7 s (bench/release.py --timeline).
AUTO_ONE_PER_TASK = 3
# auto: a bigger stage aims at this many hosts per task… Each task beyond the first costs a
# worker, a supervisor and a heartbeat a second through the api-server. 200 hosts (stages of 50
# and 148) in 4 release tasks instead of 8: 67.5 s and 31.5 CPU-s against 71.9 s and 34.1
# (bench/release.py --hosts-per-task 75). A killed task still loses only the hosts in flight:
# its threads (strategy.parallel shared by the stage's tasks), not the 75.
AUTO_HOSTS_PER_TASK = 75
AUTO_MAX_TASKS = 8  # …in at most this many tasks (each task start costs ≈1 CPU-s)

HostsPerTask = int | Literal["auto"]


def hosts_per_task(setting: HostsPerTask, stage_size: int, *, max_tasks: int = MAX_TASKS) -> int:
    """Hosts one release task works on in a stage of ``stage_size`` hosts.

    ``auto``: 1 up to ``AUTO_ONE_PER_TASK`` hosts, else the stage split in
    ``ceil(size / 75)`` tasks, 2 to 8 of them. A number is taken as is, raised when the stage
    would otherwise need more than ``max_tasks`` task instances.
    """
    if stage_size <= 0:
        return 1
    least = math.ceil(stage_size / max_tasks)
    if setting == "auto":
        if stage_size <= AUTO_ONE_PER_TASK:
            return max(1, least)
        tasks = min(AUTO_MAX_TASKS, max(2, math.ceil(stage_size / AUTO_HOSTS_PER_TASK)))
        return max(least, math.ceil(stage_size / tasks))
    return max(int(setting), least)


def chunk(hosts: Sequence[str], per_task: int) -> list[list[str]]:
    """``hosts`` in release order, cut in consecutive runs of ``per_task`` (the last may be short)."""
    per_task = max(1, per_task)
    return [list(hosts[i:i + per_task]) for i in range(0, len(hosts), per_task)]


def task_items(setting: HostsPerTask, hosts: Sequence[str],
               max_tasks: int = MAX_TASKS) -> list[str] | list[list[str]]:
    """What a stage's release task is mapped over: host names (one host per task, as before
    ``hosts_per_task`` existed) or lists of host names (several hosts per task)."""
    per_task = hosts_per_task(setting, len(hosts), max_tasks=max_tasks)
    if per_task == 1:
        return list(hosts)
    return chunk(hosts, per_task)


def host_index(items: Sequence[str | Sequence[str]]) -> dict[str, tuple[int, int]]:
    """Per host: (the map index of the task that works on it, its index in the stage)."""
    out: dict[str, tuple[int, int]] = {}
    n = 0
    for i, item in enumerate(items):
        for host in ([item] if isinstance(item, str) else item):
            out[host] = (i, n)
            n += 1
    return out
