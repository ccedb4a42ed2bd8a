"""``./scripts/demo``: the sandbox + a local Airflow + a real release of the demo app, v1 → v2.

Interactive: leaves everything running until Ctrl-C, then stops what it started.
``--ci``: unattended; exits with the release's outcome (0 on success) after stopping all.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from sandbox.localstack import REPO, LocalStack

DAG_ID = "tars_deploy__demo"


def show_progress(run: dict, tis: list[dict]) -> None:
    stamp = time.strftime("%H:%M:%S")
    note = (run.get("note") or "").splitlines()
    running = sorted({t["task_id"] for t in tis if t["state"] in ("running", "deferred",
                                                                 "awaiting_input")})
    print(f"[{stamp}] run {run['state']:<8} {note[0] if note else ''}"
          + (f"  (now: {', '.join(running)})" if running else ""), flush=True)


def release(stack: LocalStack, version: str) -> int:
    from tars_operators.client.api import Airflow

    api = Airflow(stack.airflow.url, user=stack.airflow.user, password=stack.airflow.password)
    stack.wait_for_dag(DAG_ID)
    print(f"releasing demo {version} on {len(stack.sandbox.hosts)} sandbox hosts …", flush=True)
    started = time.monotonic()
    run = api.trigger(DAG_ID, {"version": version, "reason": "demo: v1 → v2", "ticket": "DEMO-1"})
    final = api.wait(DAG_ID, run["dag_run_id"], timeout=600, on_change=show_progress)
    took = time.monotonic() - started
    print(f"\nrelease {final['state']} in {took:.1f}s", flush=True)
    print((final.get("note") or "").strip(), "\n", flush=True)
    states = stack.sandbox.server_states()
    for host in stack.sandbox.hosts:
        print(f"  {host.name}  {host.address:<12} serves {stack.sandbox.served_version(host)}"
              f"  HAProxy {states.get(host.name)}")
    return 0 if final["state"] == "success" else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    p.add_argument("--ci", action="store_true", help="unattended: exit with the outcome")
    p.add_argument("--hosts", type=int, default=10)
    p.add_argument("--version", default="2.0.0")
    p.add_argument("--engine", choices=("local", "celery"), default="local",
                   help="local: SQLite + LocalExecutor (default); celery: PostgreSQL + Redis + "
                        "CeleryExecutor, two schedulers, workers dc1/dc2 (docs/production.md)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    home = REPO / (".airflow-demo" if args.engine == "local" else ".airflow-demo-celery")
    stack = LocalStack.create(sandbox_dir=REPO / ".sandbox", airflow_home=home,
                              engine=args.engine)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        print("starting the sandbox fleet and Airflow (" + (
            "scheduler, dag-processor, triggerer, api-server" if args.engine == "local" else
            "PostgreSQL, Redis, two schedulers, dag-processor, triggerer, api-server, "
            "Celery workers dc1 and dc2") + ") …", flush=True)
        stack.start(hosts=args.hosts)
        if stack.sandbox.served_version(stack.sandbox.hosts[0]) != "1.0.0":
            stack.sandbox.reset()
        print(f"Airflow UI: {stack.airflow.url}  login: {stack.airflow.user} / "
              f"{stack.airflow.password}", flush=True)
        rc = release(stack, args.version)
        if args.ci:
            return rc
        print(f"\nAirflow UI: {stack.airflow.url}/dags/{DAG_ID}  login: {stack.airflow.user} / "
              f"{stack.airflow.password}\nHAProxy frontend: {stack.sandbox.frontend_url}\n"
              "Everything keeps running; press Ctrl-C to stop it all.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        print("stopping Airflow and the sandbox …", flush=True)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
