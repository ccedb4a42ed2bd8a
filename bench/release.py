"""Release wall time on the sandbox under the real scheduler, beside the floor.

The floor is the same verified per-host steps (stage, drain + wait, activate, health, smoke,
ready + wait UP) run by a bare script: a thread per host, stage after stage, no orchestration.
Prints seconds per release and where the time goes (per stage: hosts' own work vs. the hops).

    .venv/bin/python bench/release.py --hosts 10 30
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

import yaml  # noqa: E402

from sandbox import Sandbox  # noqa: E402
from sandbox.airflow_stack import AirflowStack  # noqa: E402
from sandbox.localstack import wired_env  # noqa: E402
from tests.e2e.harness import demo_config  # noqa: E402


def _t(s: str | None) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() if s else 0.0


def airflow_release(sb: Sandbox, stack: AirflowStack, config_dir: Path, version: str) -> dict:
    from tars_operators.client.api import Airflow

    (config_dir / "bench.yaml").write_text(
        yaml.safe_dump(demo_config("bench", sb.inventory_path), sort_keys=False))
    api = Airflow(stack.url, user=stack.user, password=stack.password)
    deadline = time.monotonic() + 120
    while True:
        try:
            api.dag("tars_deploy__bench")
            break
        except Exception:  # noqa: BLE001
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    started = time.time()
    run = api.trigger("tars_deploy__bench", {"version": version, "reason": "benchmark"})
    final = api.wait("tars_deploy__bench", run["dag_run_id"], timeout=900, poll=0.25)
    wall = time.time() - started
    assert final["state"] == "success", final.get("note")
    tis = api.task_instances("tars_deploy__bench", run["dag_run_id"])
    return {"wall": wall, "tis": tis, "run": final}


def stage_breakdown(tis: list[dict]) -> list[tuple[str, float, float, int]]:
    """Per stage: (stage, wall from enter start to gate end, slowest host's own work, hosts)."""
    rows = []
    stages = sorted({t["task_id"].split(".")[0] for t in tis if t["task_id"].endswith(".enter")},
                    key=lambda s: min(_t(t["start_date"]) for t in tis
                                      if t["task_id"] == f"{s}.enter"))
    for s in stages:
        mine = [t for t in tis if t["task_id"].startswith(s + ".") and t["start_date"]]
        hosts = [t for t in mine if t["task_id"] == f"{s}.release" and t["state"] == "success"]
        start = min(_t(t["start_date"]) for t in mine)
        end = max(_t(t["end_date"]) for t in mine)
        work = max((t["duration"] or 0.0 for t in hosts), default=0.0)
        rows.append((s, end - start, work, len(hosts)))
    return rows


def floor_release(sb: Sandbox, version: str) -> float:
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
    cfg.write_text(yaml.safe_dump(demo_config("floor", sb.inventory_path), sort_keys=False))
    import json
    import os
    os.environ["AIRFLOW_CONN_TARS_SANDBOX"] = json.dumps(sb.connection_json)
    spec = load_app(cfg)
    import tars_operators.hooks.ssh  # noqa: F401 - imports are not part of the floor's time
    import tars_operators.steps.stage  # noqa: F401
    started = time.monotonic()
    art = fetch_artifact(spec, version, cache_dir=tmp / "cache")
    plan = plan_release(spec)

    def one(name: str) -> None:
        job = hostflow.HostJob(spec, spec.host(name), version, "floor", art)
        assert hostflow.run_until_health(job) is None
        hostflow.finish(job)

    with ThreadPoolExecutor(max_workers=64) as pool:
        for stage in plan.stages:
            list(pool.map(one, stage.hosts))
    took = time.monotonic() - started
    shutil.rmtree(tmp, ignore_errors=True)
    return took


def bench(n: int, parallelism: int) -> None:
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
        result = airflow_release(sb, stack, config_dir, "2.0.0")
        sb.reset()
        floor = floor_release(sb, "2.0.0")
        print(f"\n{n} hosts, ramp fort + [1, 25%, 100%], LocalExecutor parallelism {parallelism}")
        print(f"  Tars under the real scheduler: {result['wall']:6.1f} s  "
              f"(trigger → run success)")
        print(f"  floor (bare script, same steps): {floor:6.1f} s")
        print("  stage        wall  slowest host  hosts  orchestration")
        for stage, wall, work, hosts in stage_breakdown(result["tis"]):
            print(f"  {stage:<10} {wall:6.1f}  {work:10.1f}  {hosts:5d}  {wall - work:8.1f}")
    finally:
        stack.stop()
        sb.down()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--hosts", type=int, nargs="+", default=[10, 30])
    p.add_argument("--parallelism", type=int, default=32)
    args = p.parse_args()
    for n in args.hosts:
        bench(n, args.parallelism)


if __name__ == "__main__":
    main()
