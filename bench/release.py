"""Release wall time, controller CPU and failed requests on the sandbox, Tars beside the floor.

The floor is the same verified per-host steps (stage, drain + wait, activate, health, smoke,
ready + wait UP) run by a bare script: threads, stage after stage, no orchestration. Both run
on the same fleet in one run, each under a steady 50 req/s through HAProxy (every failed
request counted). Controller CPU-s: every Airflow process and its task processes (Tars runs
inside them) for Tars; the script's own process for the floor, less the load generator's
thread (it runs in this process). Fleets above 100 hosts use the
sandbox's scale mode (one sshd per 16 addresses, one app process). The same Airflow services
are sampled for 10 s with no run first: what they cost at rest over the run's wall time is
printed apart, since no release can cut it (only end sooner).

    .venv/bin/python bench/release.py                 # 10, 30, 200 hosts
    .venv/bin/python bench/release.py --hosts 30 --big  # and 2,000 (fort + 1%, 10%, 100%)
    .venv/bin/python bench/release.py --hosts 10 30 --engine celery
    .venv/bin/python bench/release.py --hosts 200 --hosts-per-task 75  # the app's setting

``--engine celery`` also releases on the production engine (PostgreSQL + Redis +
CeleryExecutor, two schedulers, workers dc1/dc2, each datacenter's hosts on its own queue) in
the same run, on the same fleet, and prints it beside the LocalExecutor with the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

import psutil  # noqa: E402
import yaml  # noqa: E402

from sandbox import Sandbox  # noqa: E402
from sandbox.airflow_stack import AirflowStack  # noqa: E402
from sandbox.localstack import wired_env  # noqa: E402
from sandbox.outputs import queues_inventory  # noqa: E402
from tests.e2e.harness import Load, demo_config  # noqa: E402

BIG = 2000


@dataclass
class Result:
    wall: float
    cpu: float  # controller CPU-seconds
    failed: int  # failed requests through HAProxy during the release
    requests: int
    detail: Any = None
    started: float = 0.0  # when the run was triggered (epoch)
    cpu_split: str = ""  # controller CPU-s per Airflow component (and the tasks it ran)
    at_rest: float = 0.0  # CPU-s per second the same Airflow services use with no run


def at_rest_share(r: Result) -> str:
    """What Airflow's services cost at rest over the run's wall time, and the rest: the part
    of the controller CPU that a release can cut (the rest is a price of the run lasting)."""
    idle = r.at_rest * r.wall
    return (f"at rest these services use {r.at_rest:.3f} CPU-s/s (sampled {AT_REST:.0f} s before "
            f"the run): {idle:.1f} CPU-s of this run's {r.wall:.1f} s; the rest "
            f"{r.cpu - idle:.1f} CPU-s")


def _t(s: str | None) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() if s else 0.0


POLL = 2.0  # seconds between the bench's reads of the run it measures
AT_REST = 10.0  # seconds the services are sampled with no run, after the warm-up settled
HOSTS_PER_TASK: int | str = "auto"  # strategy.hosts_per_task of the bench app (--hosts-per-task)


def app_config(name: str, sb: Sandbox, n: int, engine: str = "local") -> dict[str, Any]:
    overrides: dict[str, Any] = {"strategy.hosts_per_task": HOSTS_PER_TASK}
    if n >= BIG:  # the ramp for 2,000 hosts; its last stage needs a lower floor
        overrides |= {"strategy.batches": ["1%", "10%", "100%"], "traffic.min_in_service": "10%"}
    # On Celery each datacenter's hosts go to their own worker's queue.
    inventory = queues_inventory(sb.layout) if engine == "celery" else sb.inventory_path
    data = demo_config(name, inventory, **overrides)
    data.pop("analysis", None)  # canary analysis watches traffic for a while: not the floor's steps
    return data


def tree_cpu(pids: list[int]) -> float:
    """CPU-seconds of these processes and all their descendants, reaped children included."""
    return sum(cpu_parts(pids).values())


def cpu_parts(pids: list[int]) -> dict[str, float]:
    """CPU-seconds per part: each process's own ("<pid>"), and its descendants' ("<pid>+",
    reaped children included): where a component's time goes (its loop or the tasks it runs)."""
    parts: dict[str, float] = {}
    seen: set[int] = set()
    for pid in pids:
        try:
            procs = [psutil.Process(pid)]
            procs += procs[0].children(recursive=True)
        except psutil.Error:
            continue
        for p in procs:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            own, reaped = t.user + t.system, t.children_user + t.children_system
            parts[str(pid)] = parts.get(str(pid), 0.0) + (own if p.pid == pid else 0.0)
            parts[f"{pid}+"] = parts.get(f"{pid}+", 0.0) + reaped + (0.0 if p.pid == pid else own)
    return parts


def cpu_by_component(stack: AirflowStack, before: dict[str, float],
                     after: dict[str, float]) -> str:
    """e.g. "scheduler 3.1 (its tasks 40.2), api-server 8.0, …" over one release."""
    shown = []
    for comp, proc in stack.procs.items():
        own = after.get(str(proc.pid), 0.0) - before.get(str(proc.pid), 0.0)
        kids = after.get(f"{proc.pid}+", 0.0) - before.get(f"{proc.pid}+", 0.0)
        shown.append(f"{comp} {own:.1f}" + (f" (+{kids:.1f} in its children)" if kids >= 0.05
                                             else ""))
    return ", ".join(shown)


def airflow_release(sb: Sandbox, stack: AirflowStack, config_dir: Path, version: str,
                    n: int) -> Result:
    from tars_operators.client.api import Airflow

    (config_dir / "bench.yaml").write_text(
        yaml.safe_dump(app_config("bench", sb, n, stack.engine), sort_keys=False))
    api = Airflow(stack.url, user=stack.user, password=stack.password)
    deadline = time.monotonic() + 180
    while True:
        try:
            api.dag("tars_deploy__bench")
            break
        except Exception:  # noqa: BLE001
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    # A dry run first, not counted: the first task a fresh Airflow stack runs pays ≈3 s once
    # (seen in its log before the DAG bundle loads; later tasks 0.02 s), which no release on a
    # running Airflow pays. It touches no host.
    started = time.time()
    warm = api.trigger("tars_deploy__bench", {"version": version, "reason": "warm-up",
                                              "dry_run": True})
    api.wait("tars_deploy__bench", warm["dag_run_id"], timeout=300, poll=0.5)
    print(f"  warm-up dry run (not counted): {time.time() - started:.1f} s")
    pids = [p.pid for p in stack.procs.values()]
    time.sleep(2.0)  # the warm-up's supervisors and the parse it triggered end
    rest0 = tree_cpu(pids)
    time.sleep(AT_REST)
    at_rest = (tree_cpu(pids) - rest0) / AT_REST
    with Load(sb.frontend_url) as load:
        cpu0 = cpu_parts(pids)
        started = time.time()
        run = api.trigger("tars_deploy__bench", {"version": version, "reason": "benchmark"})
        # Every poll is a request the api-server serves (≈15 ms of its CPU at 200 hosts): poll
        # slowly and take the end from the run itself (Airflow's end_date), not from the poll.
        final = api.wait("tars_deploy__bench", run["dag_run_id"], timeout=3600, poll=POLL)
        wall = (_t(final.get("end_date")) or time.time()) - started
        cpu1 = cpu_parts(pids)
    assert final["state"] == "success", final.get("note")
    tis = api.task_instances("tars_deploy__bench", run["dag_run_id"])
    cpu = sum(cpu1.values()) - sum(cpu0.values())
    return Result(wall, cpu, load.failed, load.ok + load.failed, tis, started,
                  cpu_by_component(stack, cpu0, cpu1), at_rest)


def timeline(tis: list[dict], started: float) -> list[str]:
    """Every task that ran, in start order: queued, started, ended (s after the trigger)."""
    ran = sorted((t for t in tis if t["start_date"]), key=lambda t: _t(t["start_date"]))
    rows = []
    for t in ran:
        idx = f"[{t['map_index']}]" if t["map_index"] >= 0 else ""
        queued = _t(t.get("queued_when")) - started if t.get("queued_when") else float("nan")
        rows.append(f"  {t['task_id'] + idx:<24} {queued:6.1f} {_t(t['start_date']) - started:7.1f}"
                    f" {_t(t['end_date']) - started:6.1f}  {t['state']}")
    return rows


def stage_breakdown(tis: list[dict]) -> list[tuple[str, float, float, int, int]]:
    """Per stage: (stage, wall from enter start to gate end, slowest release task, hosts, tasks)."""
    from tars_operators.client.progress import task_hosts

    rows = []
    stages = sorted({t["task_id"].split(".")[0] for t in tis if t["task_id"].endswith(".enter")
                     and t["start_date"]},
                    key=lambda s: min(_t(t["start_date"]) for t in tis
                                      if t["task_id"] == f"{s}.enter"))
    for s in stages:
        mine = [t for t in tis if t["task_id"].startswith(s + ".") and t["start_date"]]
        # fort.release, or one per queue (fort.release.dc1, …) on the celery engine
        tasks = [t for t in mine if t["task_id"].split(".")[:2] == [s, "release"]
                 and t["state"] == "success"]
        start = min(_t(t["start_date"]) for t in mine)
        end = max(_t(t["end_date"]) for t in mine)
        work = max((t["duration"] or 0.0 for t in tasks), default=0.0)
        rows.append((s, end - start, work, sum(task_hosts(t) for t in tasks), len(tasks)))
    return rows


def floor_release(sb: Sandbox, version: str, n: int) -> Result:
    """The same steps by a bare script: threads per stage, no scheduler."""
    from tars_operators.config.loader import load_app
    from tars_operators.hooks.artifacts import fetch_artifact
    from tars_operators.plan.ramp import plan_release
    from tars_operators.release import hostflow

    tmp = Path(tempfile.mkdtemp(prefix="tars-floor-"))
    # A config repository like configs/: template sources stay inside it.
    shutil.copytree(REPO / "configs" / "templates", tmp / "templates")
    (tmp / "apps").mkdir()
    cfg = tmp / "apps" / "floor.yaml"
    cfg.write_text(yaml.safe_dump(app_config("floor", sb, n), sort_keys=False))
    os.environ["AIRFLOW_CONN_TARS_SANDBOX"] = json.dumps(sb.connection_json)
    spec = load_app(cfg)
    import tars_operators.hooks.ssh  # noqa: F401 - imports are not part of the floor's time
    import tars_operators.steps.stage  # noqa: F401

    def one(name: str) -> None:
        job = hostflow.HostJob(spec, spec.host(name), version, "floor", art)
        with hostflow.connected(job):  # one SSH connection per host, as a Tars task keeps
            assert hostflow.run_until_health(job) is None
            hostflow.finish(job)

    with Load(sb.frontend_url) as load:
        cpu0 = sum(os.times()[:4])
        started = time.monotonic()
        art = fetch_artifact(spec, version, cache_dir=tmp / "cache")
        plan = plan_release(spec)
        with ThreadPoolExecutor(max_workers=spec.config.strategy.parallel) as pool:
            for stage in plan.stages:
                list(pool.map(one, stage.hosts))
        took = time.monotonic() - started
        cpu = sum(os.times()[:4]) - cpu0
    cpu -= load.cpu  # the load generator is a thread of this process; not the floor's work
    shutil.rmtree(tmp, ignore_errors=True)
    return Result(took, cpu, load.failed, load.ok + load.failed)


def celery_release(sb: Sandbox, base: Path, n: int, parallelism: int) -> Result:
    """The same release on the celery engine (its own Airflow home, PostgreSQL and Redis)."""
    stack = AirflowStack(home=base / "airflow-celery", parallelism=parallelism, engine="celery")
    # A config dir of its own, written before the start: the LocalExecutor's bench.yaml (one
    # queue) parsed first and replaced under a run would change its DAG while it runs.
    config_dir = base / "apps-celery"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "bench.yaml").write_text(
        yaml.safe_dump(app_config("bench", sb, n, "celery"), sort_keys=False))
    stack.extra_env.update(wired_env(sb, stack))
    stack.extra_env["TARS_CONFIG_DIR"] = str(config_dir)
    try:
        stack.start()
        return airflow_release(sb, stack, config_dir, "2.0.0", n)
    finally:
        stack.stop()


def bench(n: int, parallelism: int, engine: str = "local",
          timelines: bool = False, keep_logs: bool = False) -> tuple[Result, Result, Result | None]:
    base = Path(tempfile.mkdtemp(prefix="tars-bench-"))
    sb = Sandbox(REPO / f".sandbox-bench{n}", first_address=151)
    stack = AirflowStack(home=base / "airflow", parallelism=parallelism)
    config_dir = base / "apps"
    config_dir.mkdir()
    shutil.copytree(REPO / "configs" / "templates", base / "templates")
    try:
        sb.up(hosts=n)
        stack.extra_env.update(wired_env(sb, stack))
        stack.extra_env["TARS_CONFIG_DIR"] = str(config_dir)
        stack.start()
        tars = airflow_release(sb, stack, config_dir, "2.0.0", n)
        stack.stop()  # the floor runs without Airflow's idle load beside it
        sb.reset()
        cel = None
        if engine == "celery":
            cel = celery_release(sb, base, n, parallelism)
            sb.reset()
        floor = floor_release(sb, "2.0.0", n)
        ramp = "fort + [1%, 10%, 100%]" if n >= BIG else "fort + [1, 25%, 100%]"
        print(f"\n{n} hosts, ramp {ramp}, LocalExecutor parallelism {parallelism}, 50 req/s")
        print(f"  Tars under the real scheduler: {tars.wall:7.1f} s  {tars.cpu:7.1f} CPU-s  "
              f"{tars.failed} of {tars.requests} requests failed")
        print(f"    CPU-s by component: {tars.cpu_split}")
        print(f"    {at_rest_share(tars)}")
        if cel is not None:
            print(f"  Tars on CeleryExecutor (PostgreSQL, Redis, 2 schedulers, workers dc1/dc2): "
                  f"{cel.wall:7.1f} s  {cel.cpu:7.1f} CPU-s  {cel.failed} of {cel.requests} "
                  f"requests failed  ({cel.wall / tars.wall:.2f}× LocalExecutor)")
        print(f"  floor (bare script, same steps): {floor.wall:5.1f} s  {floor.cpu:7.1f} CPU-s  "
              f"{floor.failed} of {floor.requests} requests failed")
        print("  stage        wall  slowest task  hosts  tasks  orchestration")
        for stage, wall, work, hosts, tasks in stage_breakdown(tars.detail):
            print(f"  {stage:<10} {wall:6.1f}  {work:10.1f}  {hosts:5d}  {tasks:5d}  "
                  f"{wall - work:8.1f}")
        if timelines:
            print("  task                     queued started  ended")
            print("\n".join(timeline(tars.detail, tars.started)))
        if cel is not None:
            print("  [celery] stage        wall  slowest task  hosts  tasks  orchestration")
            for stage, wall, work, hosts, tasks in stage_breakdown(cel.detail):
                print(f"  [celery] {stage:<10} {wall:6.1f}  {work:10.1f}  {hosts:5d}  {tasks:5d}  "
                      f"{wall - work:8.1f}")
            if timelines:
                print("  [celery] task            queued started  ended")
                print("\n".join(timeline(cel.detail, cel.started)))
        return tars, floor, cel
    finally:
        stack.stop()
        sb.down()
        if keep_logs:
            kept = Path(tempfile.gettempdir()) / f"tars-bench-logs-{n}"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(base / "airflow" / "logs", kept, dirs_exist_ok=True)
            print(f"  task logs kept in {kept}")
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hosts", type=int, nargs="+", default=[10, 30, 200])
    p.add_argument("--big", action="store_true", help=f"also {BIG} hosts")
    p.add_argument("--parallelism", type=int, default=32)
    p.add_argument("--engine", choices=("local", "celery"), default="local",
                   help="celery: also on the production engine, beside the LocalExecutor")
    p.add_argument("--timeline", action="store_true",
                   help="print each task's queued/start/end seconds after the trigger")
    p.add_argument("--keep-logs", action="store_true",
                   help="copy the Airflow task logs to $TMPDIR/tars-bench-logs-N")
    p.add_argument("--hosts-per-task", default="auto",
                   help="the app's strategy.hosts_per_task (auto, or a number)")
    args = p.parse_args()
    global HOSTS_PER_TASK
    HOSTS_PER_TASK = "auto" if args.hosts_per_task == "auto" else int(args.hosts_per_task)
    sizes = list(args.hosts) + ([BIG] if args.big else [])
    rows = [(n, *bench(n, args.parallelism, args.engine, args.timeline, args.keep_logs))
            for n in sizes]
    print("\nhosts  Tars s  floor s  ratio  Tars CPU-s  CPU-s/host  floor CPU-s  failed (Tars/floor)")
    for n, tars, floor, cel in rows:
        print(f"{n:5d}  {tars.wall:6.1f}  {floor.wall:7.1f}  {tars.wall / floor.wall:5.1f}  "
              f"{tars.cpu:10.1f}  {tars.cpu / n:10.3f}  {floor.cpu:11.1f}  "
              f"{tars.failed}/{floor.failed}"
              + (f"  celery {cel.wall:.1f} s ({cel.wall / tars.wall:.2f}×), {cel.failed} failed"
                 if cel else ""))


if __name__ == "__main__":
    main()
