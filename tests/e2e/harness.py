"""End-to-end harness: the session sandbox + the real Airflow services, and app configs.

Tests add app configs (variants of the demo app) to the stack's config dir at run time; the
dag-processor picks them up and the test waits until the DAG is visible through the API.
"""

from __future__ import annotations

import copy
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import psutil
import yaml

from sandbox import Sandbox
from sandbox.airflow_stack import AirflowStack
from sandbox.localstack import REPO
from sandbox.procs import descendants, is_alive
from tars_operators.steps.lease import Lease, parse_lease
from tars_operators.client.api import Airflow
from tars_operators.factory.doc import config_digest
from tests import polling

DEMO = REPO / "configs" / "apps" / "demo.yaml"


def demo_config(name: str, inventory: Path, **overrides: Any) -> dict[str, Any]:
    """The demo app config under another name, with ``section.key`` overrides.

    Its template ``src`` stays relative (``../templates/…``): the config directory must sit in
    a config repository that has the demo's templates (``E2E`` copies them there).
    """
    data = yaml.safe_load(DEMO.read_text())
    data["app"]["name"] = name
    data["hosts"]["inventory"] = str(inventory)
    for dotted, value in overrides.items():
        node = data
        *path, last = dotted.split(".")
        for key in path:
            node = node.setdefault(key, {})
        node[last] = copy.deepcopy(value)
    return data


def parse_now(api: Airflow) -> None:
    """Ask the dag-processor to parse the Tars DAG file at once (Airflow's ``PUT /parseDagFile``,
    as a person can from the UI) after a config was written. It is otherwise seen at the
    file's next interval (``min_file_process_interval``, 10 s here): ≈5 s per changed app on
    average, minutes over the whole suite."""
    dags = api.items("/api/v2/dags", "dags", params={"dag_id_pattern": "tars_deploy__%",
                                                      "limit": 1})
    if dags:  # every Tars DAG comes from the same file (dags/tars_apps.py)
        api.request("PUT", f"/api/v2/parseDagFile/{dags[0]['file_token']}")


@dataclass
class E2E:
    sandbox: Sandbox
    stack: AirflowStack
    config_dir: Path

    @property
    def api(self) -> Airflow:
        return Airflow(self.stack.url, user=self.stack.user, password=self.stack.password)

    def add_app(self, name: str, timeout: float = 90, **overrides: Any) -> str:
        """Write ``configs/<name>.yaml`` (a demo variant) and wait for its deploy DAG."""
        data = demo_config(name, self.sandbox.inventory_path, **overrides)
        path = self.config_dir / f"{name}.yaml"
        text = yaml.safe_dump(data, sort_keys=False)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            parse_now(self.api)
        dag_id = f"tars_deploy__{name}"
        self.wait_dag(dag_id, timeout)
        # The DAG may exist from an earlier test's config: wait for the one built from this
        # text (its docs name the config's digest), or a run would follow the old config.
        digest = f"sha256 `{config_digest(path)}`"
        poll(lambda: digest in (self.api.dag_details(dag_id).get("doc_md") or ""), timeout,
             f"{dag_id} re-parsed from the new {path.name}", interval=0.5)
        return dag_id

    def wait_dag(self, dag_id: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        api = self.api
        while True:
            try:
                return api.dag(dag_id)
            except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
                if time.monotonic() > deadline:
                    errs = api.request("GET", "/api/v2/importErrors")
                    raise AssertionError(f"{dag_id} never appeared: {exc}; {errs}") from None
            time.sleep(0.5)

    def release(self, dag_id: str, conf: dict[str, Any], timeout: float = 300,
                on_change: Callable | None = None) -> dict[str, Any]:
        api = self.api
        run = api.trigger(dag_id, conf)
        return api.wait(dag_id, run["dag_run_id"], timeout=timeout, on_change=on_change)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        return {
            (t["task_id"] if t["map_index"] < 0 else f"{t['task_id']}[{t['map_index']}]"): t["state"]
            for t in self.api.task_instances(dag_id, run_id)
        }

    def versions(self) -> dict[str, str | None]:
        return {h.name: self.sandbox.served_version(h) for h in self.sandbox.hosts}

    def releases_on(self, host_name: str) -> list[str]:
        root = Path(self.sandbox.host(host_name).deploy_root) / "releases"
        return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))

    # -- faults: the processes behind a host's work, found by their connections ---------------
    def lease(self, host_name: str) -> Lease | None:
        """The host's lease as its file says now (None: no run holds it)."""
        path = Path(self.sandbox.host(host_name).deploy_root) / ".tars" / "lease"
        try:
            return parse_lease(host_name, path.read_text())
        except FileNotFoundError:
            return None

    def phase(self, host_name: str) -> str | None:
        lease = self.lease(host_name)
        return lease.phase if lease else None

    def ssh_clients(self, host_name: str) -> list[int]:
        """Pids of Airflow processes with an open SSH connection to the host (task processes:
        descendants of the scheduler or triggerer this stack started)."""
        host = self.sandbox.host(host_name)
        ours = {p for comp in ("scheduler", "triggerer") if comp in self.stack.procs
                for p in descendants(self.stack.procs[comp].pid)}
        ours |= {p for o in self.stack.orphan_pids() for p in (o, *descendants(o))}
        return sorted({c.pid for c in _connections()
                       if c.pid in ours and c.raddr and c.status == psutil.CONN_ESTABLISHED
                       and (c.raddr.ip, c.raddr.port) == (host.address, host.ssh_port)})

    def kill_task_on(self, host_name: str, timeout: float = 30) -> int:
        """``kill -9`` the one task process connected to the host over SSH; its pid."""
        pids = poll(lambda: self.ssh_clients(host_name), timeout,
                    f"a task process connected to {host_name}", interval=0.05)
        assert len(pids) == 1, f"several processes connected to {host_name}: {pids}"
        os.kill(pids[0], signal.SIGKILL)
        poll(lambda: not is_alive(pids[0]), 10, f"task process {pids[0]} to die", interval=0.05)
        return pids[0]

    def cut_off(self, host_name: str) -> list[int]:
        """The host unreachable over SSH: new connections refused (``block_ssh``) and the
        sshd sessions already serving it killed; returns the session pids killed."""
        host = self.sandbox.host(host_name)
        self.sandbox.block_ssh(host_name)
        shards = [p.pid() for p in self.sandbox.infra_processes() if p.label.startswith("sshd")]
        sshd_children = {c for s in shards if s for c in descendants(s)}
        sessions = sorted({c.pid for c in _connections()
                           if c.pid in sshd_children and c.laddr and c.raddr
                           and (c.laddr.ip, c.laddr.port) == (host.address, host.ssh_port)})
        for pid in sessions:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        poll(lambda: not any(is_alive(p) for p in sessions), 10, f"sshd sessions of {host_name} to die")
        return sessions

    @contextmanager
    def component_down(self, comp: str, sig: int = signal.SIGKILL, *,
                       group: bool = True) -> Iterator[int]:
        """An Airflow component killed (its pid yielded) and started again on the way out,
        even when the body fails."""
        pid = self.stack.pid(comp)
        self.stack.kill(comp, sig, group=group)
        try:
            yield pid
        finally:
            self.stack.restart(comp)


def processes_running(*argv: str) -> list[int]:
    """Pids whose command line is exactly ``argv`` (e.g. a marker ``sleep`` of a test)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"] == list(argv) and is_alive(proc.pid):
            found.append(proc.pid)
    return found


def _connections() -> list[Any]:
    try:
        return psutil.net_connections(kind="tcp")
    except psutil.Error:
        return []


@dataclass
class Load:
    """Steady requests through the HAProxy frontend, counting every failure."""

    url: str
    rate: float = 50.0
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    cpu: float = 0.0  # CPU-seconds this load generator spent (its thread), known after exit
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def _run(self) -> None:
        cpu0 = time.thread_time()
        try:
            self._send()
        finally:
            self.cpu = time.thread_time() - cpu0

    def _send(self) -> None:
        interval = 1.0 / self.rate
        with httpx.Client(timeout=10) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                try:
                    r = client.get(self.url)
                    if r.status_code == 200:
                        self.ok += 1
                    else:
                        self.failed += 1
                        self.errors.append(f"{r.status_code} {r.text[:80]}")
                except httpx.HTTPError as exc:
                    self.failed += 1
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))


def poll(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """``tests.polling.poll`` at a pace the api-server does not notice."""
    return polling.poll(check, timeout, what, interval)
