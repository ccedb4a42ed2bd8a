"""The nginx provider against a real nginx in front of sandbox hosts, edited over real SSH.

Proves what issue 11 found missing: a drain waits for the requests in flight (nginx's old
workers), and a reload nginx does not apply is caught and the file put back.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sandbox import Sandbox
from tars_operators.config.spec import AppSpec
from tars_operators.errors import LoadBalancerError
from tars_operators.hooks.lb import load_balancer_for
from tars_operators.steps.traffic import pull_in, pull_out
from tests.integration.test_traffic import make_spec, ssh_conn  # noqa: F401 — the fixture
from tests.polling import poll

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
                                 reason="nginx is not installed (./scripts/setup installs it as root)")]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Nginx:
    """nginx with its own prefix, config and pid file, proxying upstream `demo_app`."""

    dir: Path
    port: int

    @property
    def conf(self) -> Path:
        return self.dir / "nginx.conf"

    @property
    def upstream(self) -> Path:
        return self.dir / "upstream.conf"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> list[str]:
        return [NGINX, "-p", str(self.dir), "-c", str(self.conf), *args]

    def reload(self) -> str:
        return " ".join(self.cli("-s", "reload"))

    def add_server_block(self, port: int) -> None:
        """A second listener, appended to the main config (used to make a reload fail)."""
        text = self.conf.read_text().rstrip().rstrip("}")
        self.conf.write_text(text + f"    server {{ listen 127.0.0.1:{port}; return 204; }}\n}}\n")


@pytest.fixture
def nginx(fleet: Sandbox, tmp_path: Path) -> Iterator[Nginx]:
    ng = Nginx(tmp_path / "nginx", free_port())
    ng.dir.mkdir()
    (ng.dir / "logs").mkdir()
    servers = "".join(f"    server {h.address}:{h.app_port};\n" for h in fleet.hosts[:2])
    ng.upstream.write_text(f"upstream demo_app {{\n{servers}}}\n")
    ng.conf.write_text(f"""\
user root;
worker_processes 1;
pid {ng.dir}/nginx.pid;
error_log {ng.dir}/logs/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    include {ng.upstream};
    server {{
        listen 127.0.0.1:{ng.port};
        location / {{ proxy_pass http://demo_app; proxy_next_upstream off; }}
    }}
}}
""")
    subprocess.run(ng.cli("-t", "-q"), check=True)
    subprocess.run(ng.cli(), check=True)  # daemonises; the master's pid is in nginx.pid
    try:
        poll(lambda: _get(ng.url) is not None, 10, "nginx to answer")
        yield ng
    finally:
        pid = (ng.dir / "nginx.pid").read_text().strip() if (ng.dir / "nginx.pid").exists() else ""
        subprocess.run(ng.cli("-s", "quit"), capture_output=True)
        if pid:
            poll(lambda: not Path(f"/proc/{pid}").exists(), 15, "nginx to stop")


def _get(url: str) -> str | None:
    try:
        resp = httpx.get(url, timeout=2)
        return resp.json()["host"] if resp.status_code == 200 else None
    except httpx.HTTPError:
        return None


def serving(ng: Nginx, n: int = 20) -> Counter[str]:
    seen: Counter[str] = Counter()
    with httpx.Client(base_url=ng.url, timeout=5) as http:
        for _ in range(n):
            resp = http.get("/")
            assert resp.status_code == 200, resp.text
            seen[resp.json()["host"]] += 1
    return seen


def nginx_specs(fleet: Sandbox, ng: Nginx) -> tuple[AppSpec, AppSpec]:
    """(the whole fleet: resolves lb_host host10, the app on nginx's two upstream hosts)."""
    spec = make_spec(fleet, {"provider": "nginx", "drain_timeout": 20, "min_in_service": 1, "nginx": {
        "lb_host": fleet.hosts[9].name, "upstream_file": str(ng.upstream), "upstream": "demo_app",
        "reload": ng.reload(), "pid_file": str(ng.dir / "nginx.pid")}})
    return spec, dataclasses.replace(spec, hosts=spec.hosts[:2])


def test_nginx_drain_waits_for_the_request_in_flight(fleet: Sandbox, nginx: Nginx, ssh_conn: None) -> None:
    whole, spec = nginx_specs(fleet, nginx)
    target = spec.host(fleet.hosts[1].name)
    assert set(serving(nginx)) == {fleet.hosts[0].name, target.name}
    slow: list[tuple[int, str, float]] = []

    def slow_request() -> None:
        resp = httpx.get(f"{nginx.url}/slow?seconds=3", timeout=20)
        slow.append((resp.status_code, resp.json()["host"], time.monotonic()))

    threads = [threading.Thread(target=slow_request) for _ in range(2)]  # round robin: one each
    for t in threads:
        t.start()
    with load_balancer_for(whole) as lb:
        poll(lambda: all(_connections_to(h) for h in fleet.hosts[:2]), 5,
             "the slow requests to reach both apps")
        step = pull_out(lb, spec, target)
        done = time.monotonic()
        for t in threads:
            t.join(20)
        assert sorted(s[:2] for s in slow) == sorted([(200, fleet.hosts[0].name), (200, target.name)])
        on_target = next(at for _, host, at in slow if host == target.name)
        assert done >= on_target, "pull_out returned before the request in flight on it finished"
        assert step.data["verified"] and not step.data["forced_maint"]
        assert (step.data["status"], step.data["sessions"]) == ("MAINT", 0)
        assert target.name not in serving(nginx)
        back = pull_in(lb, spec, target)
        assert back.data["status"] == "UP"
        assert target.name in serving(nginx)


def _connections_to(host: object) -> int:
    """Established TCP connections to the host's app port (nginx's proxied requests)."""
    dst = f"{host.address}:{host.app_port}"  # type: ignore[attr-defined]
    out = subprocess.run(["ss", "-Htn", "state", "established", "dst", dst],
                         capture_output=True, text=True).stdout
    return len(out.splitlines())


def test_a_reload_nginx_does_not_apply_is_caught_and_undone(
        fleet: Sandbox, nginx: Nginx, ssh_conn: None) -> None:
    whole, spec = nginx_specs(fleet, nginx)
    target = spec.host(fleet.hosts[1].name)
    before = nginx.upstream.read_text()
    with socket.socket() as taken:  # the new config listens on a port in use: nginx keeps the old one
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        nginx.add_server_block(taken.getsockname()[1])
        with load_balancer_for(whole) as lb, pytest.raises(LoadBalancerError) as err:
            lb.drain(target)
    message = str(err.value)
    assert message.startswith(f"{target.name}: nginx reload not applied on {fleet.hosts[9].name} (")
    assert "did not replace its workers within 10s of the reload" in message
    assert "restored to its previous content" in message
    assert nginx.upstream.read_text() == before, "the file says down while nginx still routes"
    assert target.name in serving(nginx)
