"""The sandbox fleet + a local Airflow wired to it: what the demo, e2e tests and benchmarks use."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sandbox import Sandbox
from sandbox.airflow_stack import AirflowStack
from sandbox.outputs import queues_inventory

REPO = Path(__file__).resolve().parent.parent


def wired_env(sb: Sandbox, stack: AirflowStack) -> dict[str, str]:
    """Connections and settings Tars needs, as env vars for every Airflow component."""
    api_conn = {"conn_type": "http", "host": "127.0.0.1", "port": stack.port, "schema": "http",
                "login": stack.user, "password": stack.password}
    return {
        "AIRFLOW_CONN_TARS_SANDBOX": json.dumps(sb.connection_json),
        "AIRFLOW_CONN_TARS_API": json.dumps(api_conn),
        # On the celery engine each datacenter's hosts run on their own worker's queue.
        "TARS_INVENTORY": str(queues_inventory(sb.layout) if stack.engine == "celery"
                              else sb.inventory_path),
        "TARS_CACHE_DIR": str(stack.home / "tars-cache"),
    }


@dataclass
class LocalStack:
    sandbox: Sandbox
    airflow: AirflowStack
    started_sandbox: bool = False  # stop only what we started

    @classmethod
    def create(cls, *, sandbox_dir: Path, airflow_home: Path, hosts: int = 10,
               first_address: int = 11, parallelism: int = 16,
               config_dir: Path | None = None,
               engine: Literal["local", "celery"] = "local") -> LocalStack:
        sb = Sandbox(sandbox_dir, first_address=first_address)
        stack = AirflowStack(home=airflow_home, parallelism=parallelism, engine=engine)
        if config_dir is not None:
            stack.extra_env["TARS_CONFIG_DIR"] = str(config_dir)
        return cls(sb, stack)

    def start(self, hosts: int = 10) -> None:
        if not self.sandbox.is_up():
            self.sandbox.up(hosts=hosts)
            self.started_sandbox = True
        self.airflow.extra_env.update(wired_env(self.sandbox, self.airflow))
        self.airflow.start()

    def stop(self) -> None:
        try:
            self.airflow.stop()
        finally:
            if self.started_sandbox:
                self.sandbox.down()

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict:
        from tars_operators.client.api import Airflow, ApiError

        api = Airflow(self.airflow.url, user=self.airflow.user, password=self.airflow.password)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return api.dag(dag_id)
            except ApiError as exc:
                if time.monotonic() > deadline:
                    errors = api.request("GET", "/api/v2/importErrors")
                    raise TimeoutError(f"{dag_id} not visible after {timeout}s: {exc}; "
                                       f"import errors: {errors}") from None
            time.sleep(0.5)
