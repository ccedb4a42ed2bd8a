"""A real Prometheus (Debian's ``prometheus`` package) scraping every sandbox host's ``/metrics``.

Started on loopback on demand (the canary analysis tests: ``tests/e2e/test_analysis.py``), its
targets written from the sandbox's inventory, its data in a temporary directory under the
sandbox; ``stop`` (and ``with``) ends it and removes the data.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from types import TracebackType

import yaml

from sandbox.errors import SandboxError
from sandbox.procs import Tracked, free_port, terminate, wait_until

BINARY = "/usr/bin/prometheus"
SCRAPE_SECONDS = 1.0


def targets_from_inventory(inventory: Path) -> list[dict[str, object]]:
    """One scrape target per inventory host: ``<address>:<vars.app_port>``, labelled ``host``."""
    data = yaml.safe_load(inventory.read_text())
    return [{"targets": [f"{h['address']}:{h['vars']['app_port']}"], "labels": {"host": h["name"]}}
            for h in data.get("hosts") or []]


class Prometheus:
    """One Prometheus for a sandbox directory (pid file, config and data under ``<dir>/prometheus``)."""

    def __init__(self, sandbox_dir: Path, inventory: Path) -> None:
        self.root = Path(sandbox_dir) / "prometheus"
        self.inventory = inventory
        self.port: int | None = None
        self.process = Tracked("prometheus", self.root / "prometheus.pid", "prometheus")

    @property
    def url(self) -> str:
        if self.port is None:
            raise SandboxError("the sandbox prometheus is not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> str:
        """Start it (stopping a leftover first); returns its URL once it answers."""
        if not Path(BINARY).exists():
            raise SandboxError(f"{BINARY} missing: install Debian's prometheus package "
                               f"(scripts/setup does)")
        self.stop()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "targets.json").write_text(json.dumps(targets_from_inventory(self.inventory)))
        config = {
            "global": {"scrape_interval": f"{SCRAPE_SECONDS:g}s",
                       "scrape_timeout": f"{SCRAPE_SECONDS:g}s"},
            "scrape_configs": [{"job_name": "demo", "metrics_path": "/metrics",
                                "file_sd_configs": [{"files": [str(self.root / "targets.json")],
                                                     "refresh_interval": "5s"}]}],
        }
        (self.root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        with open(self.root / "prometheus.log", "ab") as log:
            proc = subprocess.Popen(
                [BINARY, f"--config.file={self.root / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.root / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1h"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        self.process.pid_file.write_text(f"{proc.pid}\n")
        try:
            wait_until(self._ready, timeout, f"prometheus on {self.url} (log: "
                                             f"{self.root / 'prometheus.log'})", interval=0.2)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def targets_up(self) -> dict[str, bool]:
        """Scrape target (address:port) → whether its last scrape succeeded."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=2) as resp:
            active = json.load(resp)["data"]["activeTargets"]
        return {t["labels"]["instance"]: t["health"] == "up" for t in active}

    def stop(self) -> None:
        """Stop the process this sandbox recorded (by its pid file) and remove its data."""
        pid = self.process.pid()
        if pid is not None:
            terminate([pid])
        self.process.pid_file.unlink(missing_ok=True)
        shutil.rmtree(self.root / "data", ignore_errors=True)

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
