"""Benchmark: 500 app configs (50 hosts each) → DAGs, against Airflow's own floor.

Tars: load + validate every YAML file and build its deploy and rollback DAGs (what the DAG file
does at parse time). Floor: the same DAG objects (same operators, task ids, edges, Params, doc)
written directly in Python, one literal module per app, executed from compiled code — what
Airflow itself needs to construct them. Both set the form's Params after
creating the tasks, as the factory does (Airflow deep-copies DAG params into every operator).
Each figure is the CPU time of one fresh process (imports done, heap collected) doing one
side's work, as the DAG processor parses a DAG file in a fresh process; best of --repeat,
sides interleaved so a busy machine slows both alike.

    .venv/bin/python bench/dag_factory.py [--apps 500] [--hosts 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "bench")]

import config_load  # noqa: E402
from airflow.sdk.definitions._internal.types import ArgNotSet  # noqa: E402

from tars_operators.config.loader import load_all  # noqa: E402
from tars_operators.factory.builder import (  # noqa: E402
    _at_once, build_dag, build_rollback_dag, stage_slots,
)
from tars_operators.factory.doc import plan_doc  # noqa: E402
from tars_operators.factory.params import build_params  # noqa: E402
from tars_operators.release import machine as m  # noqa: E402

HEADER = """\
from datetime import timedelta
from airflow.sdk import DAG, Param, TaskGroup
from airflow.sdk.definitions.param import ParamsDict
from tars_operators.factory.builder import START
from tars_operators.operators.finalize import DryRunOperator, FinalizeOperator, HaltOperator
from tars_operators.operators.gate import GateOperator
from tars_operators.operators.prepare import PrepareOperator
from tars_operators.operators.release_host import EnterStageOperator, FetchOperator, ReleaseHostOperator
from tars_operators.operators.rollback import (AppRollbackPlanOperator,
    RollbackHostOperator, RollbackPlanOperator, RollbackReportOperator)
from tars_operators.release.machine import StageNode
"""


def _params(params: dict) -> str:
    items = []
    for key, p in params.items():
        schema = {k: v for k, v in p.schema.items() if k != "description"}
        args = [] if isinstance(p.value, ArgNotSet) else [repr(p.value)]
        args += [f"description={p.description!r}"] + [f"{k}={v!r}" for k, v in schema.items()]
        items.append(f"{key!r}: Param({', '.join(args)})")
    return "{" + ", ".join(items) + "}"


def floor_source(spec, n: int) -> str:
    """One app's DAGs as literal Python, mirroring the factory's output."""
    c = spec.config
    slots = stage_slots(spec)
    nodes = m.topology(slots, set(), bake=False)
    common = f"config_path={str(spec.source)!r}, defaults_path=None"
    at_once = _at_once(spec)
    lines = [
        f"with DAG(dag_id={spec.dag_id!r}, description={c.app.description!r}, schedule=None, "
        f"start_date=START, catchup=False, max_active_runs=1, max_active_tasks=32, "
        f"is_paused_upon_creation=False, tags={['tars', *c.app.tags]!r}, "
        f"default_args={{'owner': {c.app.owner!r}, 'retries': 0}}, "
        f"doc_md={plan_doc(spec, slots)!r}) as dag{n}:",
        f"    prepare = PrepareOperator(task_id='prepare', slots={slots!r}, canary=False, {common})",
        f"    dry_run = DryRunOperator(task_id='dry_run', {common})",
        f"    fetch = FetchOperator(task_id='fetch', {common})",
        "    prepare >> [fetch, dry_run]",
        "    with TaskGroup('rollback'):",
        f"        plan_rb = RollbackPlanOperator(task_id='plan', trigger_rule='none_failed_min_one_success', {common})",
        f"        hosts_rb = RollbackHostOperator.partial(task_id='hosts', max_active_tis_per_dagrun={at_once}, {common}).expand(host=plan_rb.output)",
        f"        report = RollbackReportOperator(task_id='report', trigger_rule='none_skipped', {common})",
        "        plan_rb >> hosts_rb >> report",
        f"    halt = HaltOperator(task_id='halt', trigger_rule='none_failed_min_one_success', {common})",
        f"    finalize = FinalizeOperator(task_id='finalize', trigger_rule='none_failed_min_one_success', {common})",
    ]
    for i, node in enumerate(nodes):
        lines += [
            f"    with TaskGroup({node.stage!r}):",
            f"        e{i} = EnterStageOperator(task_id='enter', stage={node.stage!r}, trigger_rule='none_failed_min_one_success', {common})",
            f"        r{i} = ReleaseHostOperator.partial(task_id='release', stage={node.stage!r}, max_active_tis_per_dagrun=32, retries=0, retry_delay=timedelta(seconds=5), {common}).expand(host=e{i}.output)",
            f"        g{i} = GateOperator(task_id='gate', app={spec.name!r}, node={node!r}, stages={slots!r}, on_failure={c.strategy.on_failure!r}, trigger_rule='all_done')",
            f"        r{i} >> g{i}",
            f"        e{i} >> g{i}",
            f"    g{i} >> [plan_rb, halt, finalize]",
        ]
    lines.append("    fetch >> e0")
    lines += [f"    g{i} >> e{i + 1}" for i in range(len(nodes) - 1)]
    lines.append(f"dag{n}.params = ParamsDict({_params(build_params(spec))})")
    names = [h.name for h in spec.hosts]
    lines += [
        f"with DAG(dag_id='tars_rollback__{spec.name}', schedule=None, start_date=START, catchup=False, "
        f"max_active_runs=1, tags={['tars', 'rollback', *c.app.tags]!r}, "
        f"default_args={{'owner': {c.app.owner!r}, 'retries': 0}}, is_paused_upon_creation=False, "
        f"doc_md='rollback') as rb{n}:",
        f"    p = AppRollbackPlanOperator(task_id='plan', {common})",
        f"    RollbackHostOperator.partial(task_id='restore', whole_app=True, max_active_tis_per_dagrun={at_once}, {common}).expand(host=p.output)",
        f"rb{n}.params = ParamsDict({{'reason': Param('', type='string', minLength=1), "
        f"'ticket': Param('', type='string'), 'hosts': Param([], type='array', items={{'type': 'string', 'enum': {names!r}}}, uniqueItems=True, examples={names!r})}})",
    ]
    return "\n".join(lines)


MODES = {
    "floor": "floor (same DAGs written in Python)",
    "tars": "Tars, YAML parse cache on disk warm",
    "cold": "Tars, every YAML file parsed (cold)",
}


def child(mode: str, work: Path) -> None:
    """One measurement in this fresh process, like one DAG-file parse of the DAG processor."""
    apps = work / "configs" / "apps"
    os.environ["TARS_CONFIG_CACHE_DIR"] = "off" if mode == "cold" else str(work / "cache")
    code = compile((work / "floor.py").read_text(), "floor.py", "exec")
    gc.collect()  # start from the same clean heap on both sides
    start = time.process_time()
    if mode == "floor":
        exec(code, {"__name__": "floor"})
    else:
        for spec in load_all(apps).specs.values():
            build_dag(spec)
            build_rollback_dag(spec)
    print(json.dumps(time.process_time() - start))


def measure(mode: str, work: Path) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--work", str(work)],
                         check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--apps", type=int, default=500)
    p.add_argument("--hosts", type=int, default=50)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.work)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["TARS_CONFIG_CACHE_DIR"] = str(work / "cache")  # filled here: warm for "tars"
        specs = load_all(config_load.write(work / "configs", args.apps, args.hosts, False)).specs
        assert len(specs) == args.apps
        (work / "floor.py").write_text(
            HEADER + "\n".join(floor_source(s, i) for i, s in enumerate(specs.values())))
        runs: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(args.repeat):  # interleaved, so a busy moment slows every side alike
            for mode in MODES:
                runs[mode].append(measure(mode, work))
    best = {mode: min(times) for mode, times in runs.items()}
    per100 = 100 / args.apps
    print(f"{args.apps} apps x {args.hosts} hosts → {2 * args.apps} DAGs"
          f" (CPU s in a fresh process each, best of {args.repeat})")
    for mode, label in MODES.items():
        ratio = best[mode] / best["floor"]
        print(f"  {label:<38} {best[mode]:6.2f} s  ({best[mode] * per100:.3f} s per 100 apps)"
              f"  {ratio:.2f}x floor")


if __name__ == "__main__":
    main()
