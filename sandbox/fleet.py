"""The Sandbox: a local fleet of SSH hosts running the demo app behind HAProxy."""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sandbox import appmux, artifacts, haproxy, hosts as onhost, outputs, sshd
from sandbox.errors import SandboxError
from sandbox.prometheus import Prometheus
from sandbox.layout import SCALE_MAX_HOSTS, Host, Layout, Settings, default_dir
from sandbox.procs import (Tracked, descendants_of, free_port, is_listening, listening_sockets, require_free,
                           terminate, wait_until)
from sandbox.status import HostStatus, Status

REPO_ROOT = Path(__file__).resolve().parent.parent
UP_TIMEOUT = 20.0
# Fleets bigger than this run in scale mode (unless Sandbox(scale=...) says otherwise): hosts
# across 127.<first_address>.0.0/16 and one app process for all (see sandbox/appmux.py).
# Up to it, every host runs its own app.py on 127.0.0.<first_address + i>, as tests rely on.
SCALE_ABOVE = 100
SCALE_UP_TIMEOUT = 60.0


def http_get(address: str, port: int, path: str, timeout: float = 1.0) -> tuple[int, str] | None:
    """(status, body) of a GET, None if the connection fails."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    except OSError:
        return None
    finally:
        conn.close()


class Sandbox:
    """One sandbox directory: `up`, `down`, `reset`, and what tests and Tars need to reach it."""

    def __init__(self, dir: Path | str | None = None, *, first_address: int = 11,
                 ssh_port: int = 2222, app_port: int = 18080, scale: bool | None = None) -> None:
        """``scale``: None picks scale mode for fleets of more than SCALE_ABOVE hosts."""
        self.layout = Layout(Path(dir) if dir is not None else default_dir(REPO_ROOT))
        self.first_address, self.ssh_port, self.app_port = first_address, ssh_port, app_port
        self.scale = scale
        self._settings: Settings | None = None
        self._hosts: list[Host] | None = None
        if self.layout.state.exists():
            self._settings = Settings.read(self.layout.state)

    @classmethod
    def load(cls, dir: Path | str) -> Sandbox:
        """An existing sandbox (one `up` has written sandbox.json for)."""
        sb = cls(dir)
        if sb._settings is None:
            raise SandboxError(f"no sandbox at {sb.layout.root} ({sb.layout.state} missing); run `python -m sandbox up`")
        return sb

    # -- what callers read -------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return self.layout.root

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise SandboxError(f"sandbox at {self.layout.root} was never started; call up() first")
        return self._settings

    @property
    def hosts(self) -> list[Host]:
        """Hosts in inventory order."""
        if self._hosts is None:
            self._hosts = [self.layout.host(i, self.settings) for i in range(self.settings.hosts)]
        return list(self._hosts)

    def host(self, name: str) -> Host:
        """Host by inventory name."""
        for h in self.hosts:
            if h.name == name:
                return h
        raise SandboxError(f"no host {name!r} in sandbox {self.layout.root}")

    @property
    def is_scale(self) -> bool:
        """True if this sandbox runs in scale mode (one app process for every host)."""
        return self.settings.scale

    @property
    def inventory_path(self) -> Path:
        return self.layout.inventory

    @property
    def haproxy_socket(self) -> Path:
        return self.layout.haproxy_socket

    @property
    def haproxy_backend(self) -> str:
        return haproxy.BACKEND

    @property
    def frontend_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.frontend_port}"

    @property
    def artifact_base(self) -> str:
        return f"http://127.0.0.1:{self.settings.artifact_port}"

    @property
    def artifacts_dir(self) -> Path:
        return self.layout.artifacts

    @property
    def connection_json(self) -> dict[str, Any]:
        return outputs.connection(self.layout, self.settings)

    @property
    def known_hosts(self) -> Path:
        return self.layout.known_hosts

    @property
    def client_key(self) -> Path:
        return self.layout.client_key

    @property
    def user(self) -> str:
        return self.settings.user

    # -- processes -----------------------------------------------------------------------------
    def infra_processes(self) -> list[Tracked]:
        """sshd shards, haproxy and the artifact server (not the apps: those are the fleet's)."""
        shard_files = sorted(self.layout.run.glob("sshd-*.pid"))
        shards = [sshd.process(self.layout, int(p.stem.split("-")[1])) for p in shard_files]
        return [*shards, haproxy.process(self.layout), artifacts.server_process(self.layout.artifact_pid)]

    def app_processes(self) -> list[Tracked]:
        """Every host's app, from each deploy root's pid file (also hosts of an older, larger up),
        and the app multiplexer of scale mode."""
        roots = sorted(self.layout.hosts_dir.glob("*/app")) if self.layout.hosts_dir.exists() else []
        per_host = [Tracked(f"{r.parent.name} app", r / "shared" / "demo.pid", "app.py") for r in roots]
        mux = [appmux.process(self.layout)] if self.layout.mux_pid.exists() else []
        return per_host + mux

    def pids(self) -> dict[str, int | None]:
        """Label → live pid (None if not running) of every process the sandbox tracks."""
        return {p.label: p.pid() for p in self.infra_processes() + self.app_processes()}

    def is_up(self) -> bool:
        """True if sshd shards, haproxy and the artifact server are all alive."""
        if self._settings is None:
            return False
        procs = self.infra_processes()
        if self.settings.scale:
            procs.append(appmux.process(self.layout))
        n_shards = len(sshd.shards(self.hosts))
        return len(procs) == n_shards + 2 + self.settings.scale and all(p.pid() is not None for p in procs)

    # -- lifecycle -----------------------------------------------------------------------------
    def up(self, hosts: int = 10) -> float:
        """Start the fleet with every host serving 1.0.0 and UP in HAProxy; returns seconds taken."""
        started = time.monotonic()
        scale = self.scale if self.scale is not None else hosts > SCALE_ABOVE
        if self.is_up():
            if self.settings.hosts != hosts or self.settings.scale != scale:
                mode = " in scale mode" if self.settings.scale else ""
                raise SandboxError(
                    f"sandbox at {self.layout.root} is already up with {self.settings.hosts} hosts{mode} "
                    f"(asked for {hosts}{' in scale mode' if scale else ''}); run `python -m sandbox down` first"
                )
            return 0.0
        if scale and not (1 <= self.first_address <= 254 and 1 <= hosts <= SCALE_MAX_HOSTS):
            raise SandboxError(f"scale mode puts hosts in 127.<first address>.0.0/16: first address 1-254 "
                               f"(got {self.first_address}) and 1-{SCALE_MAX_HOSTS} hosts (got {hosts})")
        if not scale and (not 1 <= hosts or self.first_address + hosts - 1 > 254):
            raise SandboxError(f"{hosts} hosts from 127.0.0.{self.first_address} do not fit in 127.0.0.0/24; "
                               f"scale mode (more than {SCALE_ABOVE} hosts, or scale=True) spreads them over a /16")
        self.down()  # leftovers of a crashed or partial run
        try:
            self._start(hosts, scale)
        except BaseException:
            self.down()
            raise
        return time.monotonic() - started

    def _start(self, n_hosts: int, scale: bool) -> None:
        layout = self.layout
        layout.make_dirs()
        settings = Settings(
            hosts=n_hosts, first_address=self.first_address, ssh_port=self.ssh_port,
            app_port=self.app_port, frontend_port=free_port(), artifact_port=free_port(),
            user=pwd.getpwuid(os.geteuid()).pw_name, scale=scale, mux_port=free_port() if scale else 0,
        )
        addresses = [settings.address(i) for i in range(n_hosts)]
        require_free(addresses, self.ssh_port, "sshd")
        require_free(addresses, self.app_port, "demo app")
        settings.save(layout.state)
        self._settings, self._hosts = settings, None
        fleet = self.hosts
        names = {h.name for h in fleet}
        for stale in layout.hosts_dir.iterdir():  # hosts of an earlier, larger sandbox here
            if stale.name not in names:
                shutil.rmtree(stale)
        built = artifacts.build_all(layout.artifacts)
        sshd.ensure_keys(layout)
        sshd.write_known_hosts(layout, fleet)
        baseline, mux_port = built[artifacts.BASELINE_VERSION], settings.mux_port or None
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda h: onhost.install_baseline(h, baseline, mux_port), fleet))
        sshd.start(layout, fleet, settings.user)
        artifacts.start_server(layout.artifacts, settings.artifact_port, layout.artifact_pid,
                               layout.logs / "artifacts.log")
        if scale:
            appmux.start(layout, settings.mux_port)
            appmux.command(settings.mux_port, "start", fleet)
            starters = []
        else:
            starters = [onhost.start_app(h) for h in fleet]
        haproxy.start(layout, fleet, settings.frontend_port, scale)
        outputs.write_all(layout, settings, fleet)
        for h, proc in zip(fleet, starters):
            if proc.wait(timeout=30) != 0:
                raise SandboxError(f"{h.name}: demo-ctl start failed: {proc.stderr.read().decode() if proc.stderr else ''}")
        self._wait_ready(fleet)

    @property
    def _up_timeout(self) -> float:
        return SCALE_UP_TIMEOUT if self.settings.scale else UP_TIMEOUT

    def _wait_ready(self, fleet: list[Host]) -> None:
        timeout = self._up_timeout
        sshd.wait_listening(fleet, timeout, self.layout.logs)
        wait_until(lambda: is_listening("127.0.0.1", self.settings.artifact_port), timeout,
                   f"artifact server on {self.artifact_base}")
        if self.settings.scale:
            # HAProxy's passing checks below prove every app healthy; a GET per host would not add to it.
            self.wait_listening_apps(fleet, timeout)
        else:
            self.wait_healthy(fleet, timeout)
        self.wait_all_up(timeout)

    def wait_listening_apps(self, fleet: list[Host], timeout: float = UP_TIMEOUT) -> None:
        """Wait until every host's app port listens (from the kernel's listener table)."""
        def missing() -> list[str]:
            listening = listening_sockets()
            return [h.name for h in fleet if (h.address, h.app_port) not in listening]

        try:
            wait_until(lambda: not missing(), timeout, "apps")
        except SandboxError:
            late = missing()
            raise SandboxError(f"timed out after {timeout:.0f}s waiting for the apps of {len(late)} host(s) "
                               f"to listen: {', '.join(late[:5])} (see {self.layout.logs / 'mux.log'})") from None

    def wait_healthy(self, fleet: list[Host], timeout: float = UP_TIMEOUT) -> None:
        """Wait until every host's app answers /health with 200."""
        for h in fleet:
            wait_until(lambda h=h: (http_get(h.address, h.app_port, "/health") or (0, ""))[0] == 200,
                       timeout, f"{h.name} app health on {h.app_url}/health "
                                f"(log: {h.deploy_root}/shared/demo.log)")

    def wait_all_up(self, timeout: float = UP_TIMEOUT) -> None:
        """Wait until HAProxy has every host UP after a passing health check."""
        names = [h.name for h in self.hosts]
        wait_until(lambda: haproxy.all_up_and_checked(self.haproxy_socket, names), timeout,
                   f"every server UP in haproxy backend {haproxy.BACKEND} "
                   f"(states: {self._states_or_error()})")

    def _states_or_error(self) -> str:
        try:
            return json.dumps(self.server_states())
        except SandboxError as exc:
            return str(exc)

    def reset(self, timeout: float | None = None) -> None:
        """Return every host to the baseline (only 1.0.0, current → 1.0.0, running, UP, SSH open)."""
        if not self.is_up():
            raise SandboxError(f"sandbox at {self.layout.root} is not up; run `python -m sandbox up` first")
        timeout = self._up_timeout if timeout is None else timeout
        fleet = self.hosts
        if sshd.blocked_hosts(self.layout):
            sshd.set_blocked(self.layout, fleet, self.settings.user, ())
        built = artifacts.build_all(self.layout.artifacts)
        baseline = built[artifacts.BASELINE_VERSION]
        if self.settings.scale:
            port = self.settings.mux_port
            appmux.command(port, "stop", fleet)
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda h: onhost.install_baseline(h, baseline, port), fleet))
            appmux.command(port, "start", fleet)
            self.wait_listening_apps(fleet, timeout)
            haproxy.set_ready(self.haproxy_socket, [h.name for h in fleet])
            self.wait_all_up(timeout)
            return

        def reset_host(h: Host) -> None:
            onhost.stop_app(h)
            onhost.install_baseline(h, baseline)
            proc = onhost.start_app(h)
            if proc.wait(timeout=30) != 0:
                raise SandboxError(f"{h.name}: demo-ctl start failed during reset")

        with ThreadPoolExecutor(max_workers=len(fleet)) as pool:
            list(pool.map(reset_host, fleet))
        self.wait_healthy(fleet, timeout)
        haproxy.set_ready(self.haproxy_socket, [h.name for h in fleet])
        self.wait_all_up(timeout)

    def down(self) -> list[str]:
        """Stop every process this sandbox started (from pid files); returns labels that survived."""
        infra, apps = self.infra_processes(), self.app_processes()
        targets: dict[int, str] = {}
        listeners: dict[int, str] = {}
        for proc in apps + infra:
            pid = proc.pid()
            if pid is not None:
                targets[pid] = proc.label
                if proc.label.startswith("sshd"):
                    listeners[pid] = proc.label
        # Per-connection sshd children and their sessions outlive the listener (one walk of /proc
        # for every shard: a big fleet has over a hundred).
        for pid, children in descendants_of(listeners).items():
            targets.update({child: f"{listeners[pid]} session" for child in children})
        survivors = terminate(targets)
        for proc in apps + infra:
            proc.pid_file.unlink(missing_ok=True)
        # A Prometheus a test started here (sandbox/prometheus.py) and did not stop (it crashed).
        Prometheus(self.layout.root, self.layout.inventory).stop()
        self.layout.haproxy_socket.unlink(missing_ok=True)
        self.layout.ssh_blocked.unlink(missing_ok=True)
        return [f"{targets[p]} (pid {p})" for p in survivors]

    # -- failures on demand ------------------------------------------------------------------------
    def block_ssh(self, host: Host | str) -> None:
        """Make ``host`` unreachable over SSH (connection refused); its app keeps serving.

        Returns once the host's SSH port refuses and every other host's accepts. Undone by
        ``unblock_ssh``, ``reset`` and ``up``.
        """
        name = host if isinstance(host, str) else host.name
        self.host(name)
        sshd.set_blocked(self.layout, self.hosts, self.settings.user,
                         sshd.blocked_hosts(self.layout) | {name})

    def unblock_ssh(self, host: Host | str | None = None) -> None:
        """SSH of ``host`` (every blocked host when None) accepts connections again."""
        blocked = sshd.blocked_hosts(self.layout)
        name = None if host is None else (host if isinstance(host, str) else host.name)
        keep = set() if name is None else blocked - {name}
        if keep != blocked:
            sshd.set_blocked(self.layout, self.hosts, self.settings.user, keep)

    def ssh_blocked(self) -> set[str]:
        """Names of the hosts whose SSH is blocked now."""
        return sshd.blocked_hosts(self.layout)

    # -- observing -----------------------------------------------------------------------------
    def haproxy(self, cmd: str) -> str:
        """Answer of one HAProxy runtime API command (e.g. `set server demo/host01 state maint`)."""
        return haproxy.command(self.haproxy_socket, cmd)

    def server_states(self) -> dict[str, str]:
        """HAProxy server name → status (UP/DOWN/DRAIN/MAINT…), from `show stat` field 18."""
        return haproxy.server_states(self.haproxy_socket)

    def sessions(self) -> dict[str, int]:
        """HAProxy server name → current sessions (`scur`)."""
        return haproxy.sessions(self.haproxy_socket)

    def served_version(self, host: Host | str) -> str | None:
        """Version the host's app serves on /version, None if it does not answer 200."""
        h = self.host(host) if isinstance(host, str) else host
        answer = http_get(h.address, h.app_port, "/version")
        return answer[1].strip() if answer and answer[0] == 200 else None

    def status(self) -> Status:
        """Hosts with served version, HAProxy state and app pid, plus infra pids."""
        try:
            states = self.server_states() if self.is_up() else {}
        except SandboxError:
            states = {}
        apps = {p.label.split()[0]: p.pid() for p in self.app_processes()}
        with ThreadPoolExecutor(max_workers=16) as pool:
            versions = list(pool.map(self.served_version, self.hosts))
        mux = appmux.process(self.layout).pid() if self.settings.scale else None
        # In scale mode every serving host's app is the multiplexer.
        rows = [HostStatus(h.name, h.address, h.group, v, states.get(h.name),
                           (mux if v is not None else None) if self.settings.scale else apps.get(h.name))
                for h, v in zip(self.hosts, versions)]
        infra = {p.label: p.pid() for p in self.infra_processes()}
        return Status(self.layout.root, self.is_up(), rows, infra, self.frontend_url, self.artifact_base)
