"""Where everything of one sandbox lives, and its persisted settings (sandbox.json)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_FILE = "sandbox.json"
MAX_UNIX_SOCKET = 107  # sun_path is 108 bytes including the trailing NUL
# Scale mode puts hosts in 127.<first_address>.<i>.<j>, j in 1..254: one /16 per sandbox.
SCALE_HOSTS_PER_BLOCK = 254
SCALE_MAX_HOSTS = 256 * SCALE_HOSTS_PER_BLOCK


@dataclass(frozen=True)
class Host:
    """One sandbox host: its own loopback address, sshd port, deploy root and app port."""

    name: str
    address: str
    ssh_port: int
    deploy_root: Path
    app_port: int
    group: str
    home: Path

    @property
    def app_url(self) -> str:
        """Base URL of the host's demo app."""
        return f"http://{self.address}:{self.app_port}"


@dataclass(frozen=True)
class Settings:
    """Choices made at `up` time, persisted so `status`/`down`/`load` see the same sandbox."""

    hosts: int
    first_address: int
    ssh_port: int
    app_port: int
    frontend_port: int
    artifact_port: int
    user: str
    # Scale mode: hosts across 127.<first_address>.0.0/16 and one process serving every host's
    # app (demo_app/mux.py, control port mux_port). Defaults keep older sandbox.json readable.
    scale: bool = False
    mux_port: int = 0

    def address(self, index: int) -> str:
        """Loopback address of the index-th host (0-based)."""
        if self.scale:
            block, offset = divmod(index, SCALE_HOSTS_PER_BLOCK)  # skips .0 and .255
            return f"127.{self.first_address}.{block}.{offset + 1}"
        return f"127.0.0.{self.first_address + index}"

    def save(self, path: Path) -> None:
        """Write as JSON."""
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> Settings:
        """Read back what save() wrote."""
        return cls(**json.loads(path.read_text()))


class Layout:
    """Paths inside the sandbox directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self.state = self.root / STATE_FILE
        self.artifacts = self.root / "artifacts"
        self.ssh = self.root / "ssh"
        self.host_key = self.ssh / "host_ed25519"
        self.client_key = self.ssh / "client_ed25519"
        self.authorized_keys = self.ssh / "authorized_keys"
        self.known_hosts = self.ssh / "known_hosts"
        self.ssh_blocked = self.ssh / "blocked.json"  # hosts whose SSH port refuses (tests)
        self.run = self.root / "run"
        self.logs = self.root / "logs"
        self.hosts_dir = self.root / "hosts"
        self.haproxy_cfg = self.root / "haproxy.cfg"
        self.haproxy_socket = self.root / "haproxy.sock"
        self.haproxy_pid = self.run / "haproxy.pid"
        self.artifact_pid = self.run / "artifacts.pid"
        self.mux_pid = self.run / "mux.pid"
        self.inventory = self.root / "inventory.yaml"
        self.connection = self.root / "connection.json"
        self.env = self.root / "env"

    def sshd_config(self, shard: int) -> Path:
        """Config file of sshd shard number shard."""
        return self.ssh / f"sshd-{shard}.conf"

    def sshd_pid(self, shard: int) -> Path:
        """Pid file of sshd shard number shard."""
        return self.run / f"sshd-{shard}.pid"

    def host(self, index: int, settings: Settings) -> Host:
        """The index-th host (0-based); the first half goes to dc1, the rest to dc2."""
        name = f"host{index + 1:02d}"
        base = self.hosts_dir / name
        return Host(
            name=name,
            address=settings.address(index),
            ssh_port=settings.ssh_port,
            deploy_root=base / "app",
            app_port=settings.app_port,
            group="dc1" if index < (settings.hosts + 1) // 2 else "dc2",
            home=base / "home",
        )

    def make_dirs(self) -> None:
        """Create the directory skeleton; keys live here, so keep it private."""
        for path in (self.root, self.artifacts, self.ssh, self.run, self.logs, self.hosts_dir):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        os.chmod(self.ssh, 0o700)
        # Keys and runtime state must never end up in a commit of the repo around us.
        (self.root / ".gitignore").write_text("*\n")


def default_dir(repo_root: Path) -> Path:
    """$TARS_SANDBOX_DIR, else <repo>/.sandbox."""
    env = os.environ.get("TARS_SANDBOX_DIR")
    return Path(env) if env else repo_root / ".sandbox"
