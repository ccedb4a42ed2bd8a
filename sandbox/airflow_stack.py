"""A local Airflow for the demo, the e2e tests and the benchmarks.

Starts the real api-server, scheduler, dag-processor and triggerer on loopback with a fresh
SQLite home, a preset admin user and a LocalExecutor sized for a small machine, and stops
exactly the processes it started.

``auth_manager="fab"`` runs it with the FAB auth manager instead of the simple one (which
knows only roles): users and roles with per-DAG permissions (``DAG:<dag_id>``), made with
``fab_role`` and ``fab_user`` once the stack is up.

``engine="celery"`` runs the production engine instead (sandbox/engine.py): PostgreSQL 15 as
the metadata database, Redis as the Celery broker, CeleryExecutor with two schedulers and two
workers (``worker-dc1`` on queues ``default,dc1``, ``worker-dc2`` on ``default,dc2``).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from sandbox.engine import CELERY_COMPONENTS, Engine, celery_env, component_command
from sandbox.procs import descendants, is_alive, terminate

REPO = Path(__file__).resolve().parent.parent
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@dataclass
class AirflowStack:
    home: Path
    port: int = 0
    user: str = "admin"
    password: str = ""
    parallelism: int = 16
    dags_folder: Path = REPO / "dags"
    extra_env: dict[str, str] = field(default_factory=dict)
    auth_manager: Literal["simple", "fab"] = "simple"
    engine: Literal["local", "celery"] = "local"
    # PostgreSQL + Redis of the celery engine (started by ``start`` unless given).
    services: Engine | None = None
    owns_services: bool = False
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    # Children of components killed alone (``kill(group=False)``): LocalExecutor workers and
    # task processes (in groups of their own) outlive them. (pid, start time) as seen at the
    # kill, so a reused pid is never signalled; ``end_orphans`` and ``stop`` end them.
    orphans: list[tuple[int, str]] = field(default_factory=list)
    log_offsets: dict[str, int] = field(default_factory=dict)  # each log's size at its start

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        self.port = self.port or free_port()
        self.password = self.password or secrets.token_urlsafe(12)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        h = self.home
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(h),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # LocalExecutor pre-forks one worker per slot (~140 MB each): size it for 2 cores.
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            **self._auth_env(),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{h}/airflow.db",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt"),
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__CORE__INTERNAL_API_SECRET_KEY": self._secret("internal"),
            "AIRFLOW__API__SECRET_KEY": self._secret("api"),
            # Faster pick-up of new/changed DAG files and quicker scheduler loops.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            # The task supervisor can see its task's pipes close just before the process is
            # reaped; it then sleeps a whole heartbeat interval (default 5 s) before it looks
            # again. A skipped task's end (rollback.report on every good run) is recorded only
            # then, and the worker slot stays taken. 1 s bounds that wait; it costs one
            # heartbeat request per running task per second.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(h / "logs"),
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "plugins"), str(REPO)) if p),
            "NO_PROXY": "*",
        }
        if self.engine == "celery":
            if self.services is None:
                raise RuntimeError("the celery engine's PostgreSQL and Redis are not started")
            env.update(celery_env(self.services, concurrency=self.worker_concurrency))
        env.update(self.extra_env)
        return env

    @property
    def components(self) -> tuple[str, ...]:
        return CELERY_COMPONENTS if self.engine == "celery" else COMPONENTS

    @property
    def worker_concurrency(self) -> int:
        """Task slots per Celery worker: ``parallelism`` shared by the two workers."""
        return max(4, self.parallelism // 2)

    def _auth_env(self) -> dict[str, str]:
        if self.auth_manager == "fab":
            # The dag-processor checks this setting too: it creates each DAG's FAB resources.
            return {"AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER}
        return {
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
        }

    def _secret(self, name: str) -> str:
        path = self.home / f".{name}-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text()

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "airflow", *args], env=self.env(), check=check,
            capture_output=True, text=True,
        )

    def start(self, timeout: float = 120) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.engine == "celery" and self.services is None:
            self.services = Engine.start_new()
            self.owns_services = True
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        (self.home / "passwords.json").write_text(json.dumps({self.user: self.password}))
        self._run_cli("db", "migrate")  # with FAB: its user/role tables too
        if self.auth_manager == "fab":
            # --option=value: a generated password may start with "-".
            self._run_cli("users", "create", f"--username={self.user}",
                          f"--password={self.password}", "--role=Admin",
                          f"--email={self.user}@tars.invalid", f"--firstname={self.user}",
                          "--lastname=Tars")
        logs = self.home / "logs"
        logs.mkdir(exist_ok=True)
        for comp in self.components:
            self._spawn(comp)
        self.wait_healthy(timeout)

    def _run_cli(self, *args: str) -> None:
        done = self.airflow(*args, check=False)
        if done.returncode != 0:
            shown = " ".join(args).replace(self.password, "***")
            raise RuntimeError(f"airflow {shown} failed ({done.returncode}):\n"
                               f"{(done.stdout + done.stderr)[-2000:]}")

    def _spawn(self, comp: str) -> subprocess.Popen:
        """Start one component in its own session (its process group id is its pid)."""
        out = open(self.home / "logs" / f"{comp}.out", "ab")
        self.log_offsets[comp] = out.tell()
        args, extra = component_command(comp, concurrency=self.worker_concurrency)
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", *args], env={**self.env(), **extra}, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        out.close()  # the child has its own copy
        self.procs[comp] = proc
        (self.home / "pids.json").write_text(json.dumps({c: p.pid for c, p in self.procs.items()}))
        return proc

    def pid(self, comp: str) -> int:
        """Pid of a running component this stack started (fails if it is not running)."""
        proc = self.procs.get(comp)
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"airflow {comp} is not running (started: {sorted(self.procs)})")
        return proc.pid

    def kill(self, comp: str, sig: int = signal.SIGKILL, *, group: bool = True,
             timeout: float = 30) -> int:
        """Signal one component — its whole process group, or only its own pid — and wait
        until it has exited; returns its exit code. Restart it with ``restart``.

        ``group=False`` is a crash of the component alone: its children keep running
        (recorded in ``orphans``, ended by ``end_orphans`` and ``stop``).
        """
        proc = self.procs[comp]
        pid = self.pid(comp)
        if not group:
            self.orphans += [(p, _start_time(p)) for p in descendants(pid)]
        try:
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
            code = proc.wait(10)
        return code

    def restart(self, comp: str, timeout: float = 120) -> int:
        """Start a component again (same home, ports and settings) and wait until Airflow
        reports every component healthy; returns the new pid."""
        proc = self.procs.get(comp)
        if proc is not None and proc.poll() is None:
            raise RuntimeError(f"airflow {comp} is still running (pid {proc.pid})")
        pid = self._spawn(comp).pid
        self.wait_healthy(timeout)
        return pid

    def revive(self) -> dict[str, str]:
        """Start again every component that exited without being asked to; returns each one's
        exit code and log tail (empty when all were running)."""
        died = {}
        for comp, proc in list(self.procs.items()):
            if proc.poll() is not None:
                died[comp] = f"exit code {proc.returncode}; its log ends:\n{self.log_tail(comp)}"
                self._spawn(comp)
        if died:
            self.wait_healthy(120)
        return died

    def log_tail(self, comp: str, chars: int = 3000) -> str:
        """The end of a component's log (what it said before it exited)."""
        return (self.home / "logs" / f"{comp}.out").read_text(errors="replace")[-chars:]

    def orphan_pids(self) -> list[int]:
        """Children of components killed alone that are still running."""
        return [p for p, started in self.orphans if started and _start_time(p) == started
                and is_alive(p)]

    def end_orphans(self, timeout: float = 10) -> None:
        """TERM, then KILL, the children of components killed alone that still run."""
        terminate(self.orphan_pids(), timeout)
        self.orphans.clear()

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for comp, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {comp} exited ({proc.returncode}):\n"
                                       f"{self.log_tail(comp)}")
            try:
                r = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=2)
                body = r.json()
                if r.status_code == 200 and all(
                    body.get(k, {}).get("status") == "healthy"
                    for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                ) and self._workers_ready():
                    return
                last = r.text
            except (httpx.HTTPError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.5)
        raise TimeoutError(f"Airflow at {self.url} not healthy after {timeout}s: {last}")

    def _workers_ready(self) -> bool:
        """Every Celery worker (if any) has said it is ready since it was last started."""
        for comp, proc in self.procs.items():
            if comp.startswith("worker-"):
                with open(self.home / "logs" / f"{comp}.out", "rb") as log:
                    log.seek(self.log_offsets.get(comp, 0))  # since this start
                    if b"@tars-sandbox ready." not in log.read():
                        return False
        return True

    def kill_tree(self, comp: str) -> list[int]:
        """SIGKILL a component, its process group and every process under it (a Celery
        worker's pool and the task processes it supervises, in groups of their own) — a worker
        machine lost at once. Returns the pids killed; ``restart`` starts it again."""
        pid = self.pid(comp)
        tree = [(p, _start_time(p)) for p in descendants(pid)]
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for p, started in tree:
            if started and _start_time(p) == started:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.procs[comp].wait(30)
        return [pid, *(p for p, _ in tree)]

    def stop(self, timeout: float = 30) -> None:
        """Stop the processes this stack started (process groups: their workers go too)."""
        try:
            self._stop(timeout)
        finally:
            if self.services is not None and self.owns_services:
                self.services.stop()
                self.services, self.owns_services = None, False

    def _stop(self, timeout: float) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        self.procs.clear()
        self.end_orphans()

    def token(self) -> str:
        r = httpx.post(
            f"{self.url}/auth/token", json={"username": self.user, "password": self.password},
            timeout=10,
        )
        r.raise_for_status()
        return r.json()["access_token"]

    def fab_role(self, name: str, permissions: list[tuple[str, str]]) -> None:
        """Create a FAB role with ``(action, resource)`` permissions, e.g.
        ``("can_read", "DAG:tars_deploy__demo")``; a DAG's resources exist once it is parsed."""
        body = {"name": name, "actions": [{"action": {"name": a}, "resource": {"name": r}}
                                          for a, r in permissions]}
        self._fab("/auth/fab/v1/roles", body)

    def fab_user(self, username: str, password: str, roles: list[str]) -> None:
        """Create a FAB user with these roles (log in with ``POST /auth/token``)."""
        self._fab("/auth/fab/v1/users", {
            "username": username, "password": password, "email": f"{username}@tars.invalid",
            "first_name": username, "last_name": "Tars", "roles": [{"name": r} for r in roles]})

    def _fab(self, path: str, body: dict) -> None:
        if self.auth_manager != "fab":
            raise RuntimeError(f"{path}: this stack runs the {self.auth_manager} auth manager")
        with self.client() as c:
            r = c.post(path, json=body)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"POST {path} answered {r.status_code}: {r.text[:500]}")

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token()}"}, timeout=30
        )



def _start_time(pid: int) -> str:
    """Start time of a process (/proc/<pid>/stat field 22), '' when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""
