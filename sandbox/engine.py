"""The production engine's own services on loopback: PostgreSQL 15 and Redis 7.

``Engine`` starts a PostgreSQL server (Debian's ``/usr/lib/postgresql/15/bin``; its own data
directory, port and socket directory, run as an unprivileged system user because ``postgres``
refuses root) and a Redis server without persistence, each in its own session, and stops
exactly the processes it started — even when starting fails half way.

    with Engine.start_new() as engine:
        engine.database_url   # postgresql+psycopg2://airflow:…@127.0.0.1:<port>/airflow
        engine.broker_url     # redis://127.0.0.1:<port>/0
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from sandbox.errors import SandboxError
from sandbox.procs import free_port, is_alive, is_listening, wait_until

PG_BIN = Path("/usr/lib/postgresql/15/bin")
REDIS = Path("/usr/bin/redis-server")
# The unprivileged account PostgreSQL runs as when we are root (created once, no login shell).
PG_USER = "tars-pg"
DB_NAME = "airflow"
DB_USER = "airflow"


def ensure_system_user(name: str = PG_USER) -> pwd.struct_passwd:
    """The account PostgreSQL runs as: ``name`` when root (created if missing), else ourselves."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    done = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                           "--shell", "/usr/sbin/nologin", name], capture_output=True, text=True)
    # Another process may have created it meanwhile (exit 9: the name is taken): fine too.
    if done.returncode not in (0, 9):
        raise SandboxError(f"useradd {name} failed ({done.returncode}): {done.stderr.strip()}; "
                           "PostgreSQL refuses to run as root, so it needs this account")
    return pwd.getpwnam(name)


def missing_binaries() -> list[str]:
    """What ``scripts/setup`` must install before the engine can start (empty: all there)."""
    need = []
    if not (PG_BIN / "postgres").exists():
        need.append(f"{PG_BIN}/postgres (Debian package postgresql-15)")
    if not REDIS.exists():
        need.append(f"{REDIS} (Debian package redis-server)")
    return need


@dataclass
class Engine:
    """PostgreSQL + Redis for Airflow, on free loopback ports under ``base``."""

    base: Path
    pg_port: int = 0
    redis_port: int = 0
    password: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    owns_base: bool = False

    @classmethod
    def start_new(cls, timeout: float = 60) -> Engine:
        """A started engine in a fresh directory (removed again by ``stop``)."""
        # Under /tmp, not the caller's home: the postgres account must reach its data dir,
        # and a unix socket path must stay under 108 bytes.
        engine = cls(Path(tempfile.mkdtemp(prefix="tars-engine-")), owns_base=True)
        engine.start(timeout)
        return engine

    def __post_init__(self) -> None:
        self.pg_port = self.pg_port or free_port()
        self.redis_port = self.redis_port or free_port()
        self.password = self.password or secrets.token_hex(16)

    # -- what Airflow is given ----------------------------------------------------------------
    @property
    def database_url(self) -> str:
        return (f"postgresql+psycopg2://{DB_USER}:{self.password}@127.0.0.1:{self.pg_port}/"
                f"{DB_NAME}")

    @property
    def result_backend(self) -> str:
        return f"db+postgresql+psycopg2://{DB_USER}:{self.password}@127.0.0.1:{self.pg_port}/{DB_NAME}"

    @property
    def broker_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> None:
        need = missing_binaries()
        if need:
            raise SandboxError("the celery engine needs " + ", ".join(need)
                               + "; run ./scripts/setup (as root) to install them")
        try:
            self._start_postgres(timeout)
            self._start_redis(timeout)
        except BaseException:
            self.stop()
            raise

    def _start_postgres(self, timeout: float) -> None:
        account = ensure_system_user()
        pg = self.base / "pg"
        data, sock = pg / "data", pg / "run"
        for d in (pg, sock):
            d.mkdir(parents=True, exist_ok=True)
        pwfile = pg / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chmod(self.base, 0o711)  # the postgres account passes through, lists nothing
        for path in (pg, sock, pwfile):
            os.chown(path, account.pw_uid, account.pw_gid)
        as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8",
               "HOME": str(pg)}
        if not (data / "PG_VERSION").exists():
            done = subprocess.run(
                [str(PG_BIN / "initdb"), "-D", str(data), "-U", DB_USER, f"--pwfile={pwfile}",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                 "--no-sync"], capture_output=True, text=True, env=env, cwd=pg, **as_user)
            if done.returncode != 0:
                raise SandboxError(f"initdb in {data} failed ({done.returncode}): "
                                   f"{(done.stdout + done.stderr)[-1500:]}")
        pwfile.unlink()
        log = open(pg / "postgres.log", "ab")
        # fsync off: a sandbox database may lose its last writes on a crash of the machine.
        self.procs["postgres"] = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(self.pg_port),
             "-k", str(sock), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=300"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=pg,
            start_new_session=True, **as_user)
        log.close()
        self._wait_listening("postgres", self.pg_port, pg / "postgres.log", timeout)
        # The database Airflow uses, created over the socket (local connections: trust).
        psql = [str(PG_BIN.parent / "bin" / "psql"), "-h", str(sock), "-p", str(self.pg_port),
                "-U", DB_USER, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt"]
        exists = subprocess.run(psql + ["-c", f"SELECT 1 FROM pg_database WHERE datname='{DB_NAME}'"],
                                capture_output=True, text=True, env=env, **as_user)
        if exists.stdout.strip() != "1":
            made = subprocess.run(psql + ["-c", f"CREATE DATABASE {DB_NAME}"],
                                  capture_output=True, text=True, env=env, **as_user)
            if made.returncode != 0:
                raise SandboxError(f"CREATE DATABASE {DB_NAME} on port {self.pg_port} failed: "
                                   f"{made.stderr.strip()}")

    def _start_redis(self, timeout: float) -> None:
        rdir = self.base / "redis"
        rdir.mkdir(parents=True, exist_ok=True)
        log = open(rdir / "redis.log", "ab")
        self.procs["redis"] = subprocess.Popen(
            [str(REDIS), "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(rdir), "--daemonize", "no",
             "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=rdir,
            start_new_session=True)
        log.close()
        self._wait_listening("redis", self.redis_port, rdir / "redis.log", timeout)

    def _wait_listening(self, name: str, port: int, log: Path, timeout: float) -> None:
        proc = self.procs[name]

        def up() -> bool:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-1500:]
                raise SandboxError(f"{name} exited ({proc.returncode}) before listening on "
                                   f"127.0.0.1:{port}:\n{tail}")
            return is_listening("127.0.0.1", port)

        wait_until(up, timeout, f"{name} to listen on 127.0.0.1:{port} (log: {log})", 0.1)

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.procs.items() if p.poll() is None}

    def stop(self, timeout: float = 20) -> None:
        """Stop what this engine started (their process groups), then remove a fresh base."""
        for name, proc in list(self.procs.items()):
            # postgres: SIGINT is its "fast" shutdown (disconnect clients, no waiting).
            sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
            _killpg(proc, sig)
        for proc in self.procs.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _killpg(proc, signal.SIGKILL)
                proc.wait(5)
        gone = all(not is_alive(p.pid) for p in self.procs.values())
        self.procs.clear()
        if self.owns_base and gone:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _killpg(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


# -- Airflow on this engine ---------------------------------------------------------------------
# Two Celery workers, one per sandbox datacenter: each also serves the default queue (gates,
# prepare, finalize), and only it serves its datacenter's queue (that datacenter's hosts).
WORKERS = {"dc1": ("default", "dc1"), "dc2": ("default", "dc2")}
CELERY_COMPONENTS = ("api-server", "scheduler", "scheduler-2", "dag-processor", "triggerer",
                     *(f"worker-{w}" for w in WORKERS))
WORKER_ENV = "TARS_SANDBOX_WORKER"


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the sandbox workers: the worker's name (dc1, dc2), so a
    task instance's ``hostname`` tells which worker ran it on this one machine."""
    import socket

    return os.environ.get(WORKER_ENV) or socket.getfqdn()


def celery_env(engine: Engine, *, concurrency: int) -> dict[str, str]:
    """Airflow settings for CeleryExecutor on ``engine`` (every component gets the same)."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": engine.database_url,
        "AIRFLOW__CELERY__BROKER_URL": engine.broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": engine.result_backend,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
        # One task at a time per free slot: a prefetched host task would wait behind a long
        # one on a busy worker while the other worker idles.
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "default",
        # Each worker loads Airflow's task runner and the plugins once, before it forks its
        # pool: a task no longer spends ≈1 s importing them (tars_operators/celery_worker.py).
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "tars_operators.celery_worker.CELERY_CONFIG",
        # A killed worker's task stops heartbeating: failed (then retried or rolled back)
        # within ~20 s + one detection pass instead of the default 5 minutes.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_SEC": "3",
        # A killed scheduler is seen as dead after 15 s; the other adopts its tasks.
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "15",
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "120",
        # An unacknowledged message (its worker died) goes back to the queue after this long:
        # longer than any host task, so a live task is never delivered twice.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "1800",
    }


def component_command(comp: str, *, concurrency: int) -> tuple[list[str], dict[str, str]]:
    """Airflow CLI arguments and extra environment of one component of the celery stack."""
    if comp == "scheduler-2":
        return ["scheduler"], {}
    if comp.startswith("worker-"):
        name = comp.removeprefix("worker-")
        return (["celery", "worker", "--queues", ",".join(WORKERS[name]),
                 "--celery-hostname", f"{name}@tars-sandbox", "--concurrency", str(concurrency),
                 "--without-gossip", "--without-mingle"],
                {WORKER_ENV: name,
                 "AIRFLOW__CORE__HOSTNAME_CALLABLE": "sandbox.engine.worker_hostname",
                 # Each worker serves its task logs on a port of its own (one machine).
                 "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())})
    return [comp], {}
