"""Traffic against the sandbox's real HAProxy: drains, pull-ins, capacity, zero-loss rolling release.

Every claim is checked through HAProxy itself (runtime API) and real requests through its
frontend; the apps are stopped and started over real SSH.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox import Sandbox
from tars_operators.config.schema import AppConfig
from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import CapacityError, LoadBalancerError, LoadBalancerUnreachable
from tars_operators.hooks.artifacts import FetchedArtifact, fetch_artifact
from tars_operators.hooks.lb import LoadBalancer, load_balancer_for
from tars_operators.hooks.ssh import open_session
from tars_operators.steps.activate import activate_release
from tars_operators.steps.checks import run_checks
from tars_operators.steps.stage import stage_release
from tars_operators.steps.traffic import check_capacity, pull_in, pull_out, rotation_report
from tests.polling import poll

pytestmark = pytest.mark.integration
HAPROXY = {"socket": "{{ vars.haproxy_socket }}", "backend": "{{ vars.haproxy_backend }}"}
CONN_ID = "tars_sandbox"


APP_JSON = '{"address": "{{ host.address }}", "port": {{ vars.app_port }}, "host": "{{ host.name }}"}\n'


def make_spec(sb: Sandbox, traffic: dict[str, Any] | None = None, config_dir: Path | None = None) -> AppSpec:
    """The demo app on the sandbox fleet, behind its HAProxy (overrides merged into `traffic`).

    With config_dir, the spec can release: config/app.json is rendered from a template there.
    """
    ctl = "{{ deploy_root }}/current/bin/demo-ctl"
    templates = []
    if config_dir is not None:
        (config_dir / "app.json.j2").write_text(APP_JSON)
        templates = [{"src": "app.json.j2", "dest": "config/app.json"}]
    config = AppConfig.model_validate({
        "app": {"name": "demo", "owner": "tars"},
        "artifact": {"url": "{{ vars.artifact_base }}/demo-{{ version }}.tar.gz",
                     "checksum": {"url": "{{ url }}.sha256"}},
        "hosts": {},
        "ssh": {"conn_id": CONN_ID, "connect_timeout": 10, "command_timeout": 60},
        "install": {"deploy_root": "{{ vars.deploy_root }}", "templates": templates},
        "service": {"start": f"{ctl} start", "stop": f"{ctl} stop", "status": f"{ctl} status"},
        "health": [{"kind": "http", "url": "http://{{ host.address }}:{{ vars.app_port }}/health",
                    "interval": 0.05, "timeout": 30, "successes": 2}],
        "traffic": {"provider": "haproxy", "haproxy": HAPROXY, "drain_timeout": 15,
                    "ready_timeout": 10, **(traffic or {})},
    })
    hosts = tuple(Host(name=h.name, address=h.address, ssh_port=h.ssh_port, group=h.group,
                       vars={"deploy_root": str(h.deploy_root), "app_port": h.app_port})
                  for h in sb.hosts)
    global_vars = {"haproxy_socket": str(sb.haproxy_socket), "haproxy_backend": sb.haproxy_backend,
                   "frontend_url": sb.frontend_url, "artifact_base": sb.artifact_base}
    return AppSpec(config=config, hosts=hosts, source=(config_dir or Path("/sandbox")) / "demo.yaml",
                   global_vars=global_vars)


# A host of the inventory that HAProxy does not know.
GHOST = Host(name="host99", address="127.0.0.250", vars={"deploy_root": "/srv/demo", "app_port": 18080})


@pytest.fixture
def ssh_conn(monkeypatch: pytest.MonkeyPatch, fleet: Sandbox) -> None:
    """The sandbox's Airflow SSH connection, from the environment like `<sandbox>/env` sets it."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(fleet.connection_json))


@pytest.fixture
def spec(fleet: Sandbox) -> AppSpec:
    return make_spec(fleet)


@pytest.fixture
def lb(spec: AppSpec) -> Iterator[LoadBalancer]:
    with load_balancer_for(spec) as balancer:
        yield balancer


def demo_ctl(spec: AppSpec, host: Host, action: str) -> str:
    """Run `<deploy_root>/current/bin/demo-ctl <action>` on the host over SSH."""
    with open_session(spec, host) as session:
        command = f"{host.vars['deploy_root']}/current/bin/demo-ctl {action}"
        return session.run(command, step=f"test {action}").stdout


def app_healthy(host: Host) -> bool:
    try:
        return httpx.get(f"http://{host.address}:{host.vars['app_port']}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def hosts_serving(sb: Sandbox, n: int) -> Counter[str]:
    """Which hosts answer n requests through the frontend (all must succeed)."""
    seen: Counter[str] = Counter()
    with httpx.Client(base_url=sb.frontend_url, timeout=5) as http:
        for _ in range(n):
            resp = http.get("/")
            assert resp.status_code == 200, resp.text
            seen[resp.json()["host"]] += 1
    return seen


def haproxy_status(sb: Sandbox, name: str) -> str:
    return sb.server_states()[name]


# -- pull out ----------------------------------------------------------------------------------
def test_pull_out_waits_for_the_request_in_flight_and_stops_new_ones(
        fleet: Sandbox, spec: AppSpec, lb: LoadBalancer) -> None:
    target = spec.host("host03")
    others = [h.name for h in spec.hosts if h is not target]
    for name in others:  # only host03 can take the slow request
        assert fleet.haproxy(f"set server demo/{name} state maint").strip() == ""
    slow: dict[str, Any] = {}

    def slow_request() -> None:
        resp = httpx.get(f"{fleet.frontend_url}/slow?seconds=3", timeout=20)
        slow.update(status=resp.status_code, host=resp.json()["host"], done=time.monotonic())

    thread = threading.Thread(target=slow_request)
    thread.start()
    poll(lambda: lb.state(target).sessions == 1, 5, "the slow request to reach host03")
    for name in others:
        assert fleet.haproxy(f"set server demo/{name} state ready").strip() == ""
    poll(lambda: all(s == "UP" for n, s in fleet.server_states().items() if n in others), 5,
         "the other servers to be UP again")
    assert lb.state(target).sessions == 1, "the slow request must still be in flight"

    result: dict[str, Any] = {}
    puller = threading.Thread(target=lambda: result.update(r=pull_out(lb, spec, target),
                                                           done=time.monotonic()))
    puller.start()
    poll(lambda: lb.state(target).admin == "drain", 5, "host03 to be DRAIN")
    assert "host03" not in hosts_serving(fleet, 30), "a new request reached the draining host"
    puller.join(20)
    thread.join(20)
    step = result["r"]
    assert slow == {"status": 200, "host": "host03", "done": slow["done"]}
    assert slow["done"] <= result["done"], "pull_out returned before the in-flight request finished"
    assert step.state == "ok" and step.data["sessions"] == 0 and not step.data["forced_maint"]
    assert haproxy_status(fleet, "host03") == "DRAIN"
    assert "host03" not in hosts_serving(fleet, 30)
    pull_in(lb, spec, target)


def test_drain_timeout_forces_maint(fleet: Sandbox) -> None:
    spec = make_spec(fleet, {"drain_timeout": 0.5})
    lb = load_balancer_for(spec)
    target = spec.host("host05")
    for h in spec.hosts:
        if h is not target:
            fleet.haproxy(f"set server demo/{h.name} state maint")
    thread = threading.Thread(target=lambda: httpx.get(f"{fleet.frontend_url}/slow?seconds=3", timeout=20))
    thread.start()
    poll(lambda: lb.state(target).sessions == 1, 5, "the slow request to reach host05")
    for h in spec.hosts:
        if h is not target:
            fleet.haproxy(f"set server demo/{h.name} state ready")
    step = pull_out(lb, spec, target)
    assert step.data["forced_maint"] and step.data["status"] == "MAINT"
    assert step.detail == "drain timeout 0.5s with 1 sessions left; forced MAINT"
    thread.join(20)


# -- pull in -----------------------------------------------------------------------------------
def test_pull_in_waits_for_haproxys_own_health_check(fleet: Sandbox, ssh_conn: None) -> None:
    spec = make_spec(fleet, {"ready_timeout": 2})
    lb = load_balancer_for(spec)
    target = spec.host("host04")
    pull_out(lb, spec, target)
    demo_ctl(spec, target, "stop")
    with pytest.raises(LoadBalancerError) as err:
        pull_in(lb, spec, target)
    message = str(err.value)
    assert message.startswith("host04: pull_in: haproxy backend 'demo' via unix socket ")
    assert "does not report host04 UP after 2s (traffic.ready_timeout): DOWN (admin ready" in message
    assert "check L4CON (Layer4 connection problem: Connection refused)" in message
    assert "host04" not in hosts_serving(fleet, 20)

    spec = make_spec(fleet, {"ready_timeout": 15})
    lb = load_balancer_for(spec)
    pull_out(lb, spec, target)
    started: dict[str, float] = {}

    def start_later() -> None:
        time.sleep(1.0)
        started["at"] = time.monotonic()
        demo_ctl(spec, target, "start")

    starter = threading.Thread(target=start_later)
    starter.start()
    step = pull_in(lb, spec, target)
    done = time.monotonic()
    starter.join()
    assert done > started["at"], "pull_in succeeded before the app was even started"
    assert step.state == "ok" and (step.data["status"], step.data["check_status"]) == ("UP", "L7OK")
    assert haproxy_status(fleet, "host04") == "UP"
    assert "host04" in hosts_serving(fleet, 20)


def test_pull_in_from_maint_needs_a_fresh_check(fleet: Sandbox, ssh_conn: None) -> None:
    """MAINT stops checks; leaving it, HAProxy would trust the check from before the restart
    ("UP 1/2") and send requests to a dead app. No request may fail while pull_in finds out."""
    spec = make_spec(fleet, {"ready_timeout": 2})
    lb = load_balancer_for(spec)
    target = spec.host("host06")
    lb.disable(target)
    demo_ctl(spec, target, "stop")
    load = Load(fleet.frontend_url)
    loader = threading.Thread(target=load.run)
    loader.start()
    try:
        with pytest.raises(LoadBalancerError, match=r"DOWN \(admin ready, 0 sessions, check L4CON"):
            pull_in(lb, spec, target)
    finally:
        load.stop.set()
        loader.join(15)
    assert load.sent > 50 and not load.failures, f"{len(load.failures)} failed: {load.failures[:3]}"
    demo_ctl(spec, target, "start")
    poll(lambda: app_healthy(target), 10, "host06 app health")
    assert pull_in(load_balancer_for(make_spec(fleet)), spec, target).data["status"] == "UP"


# -- capacity ----------------------------------------------------------------------------------
def test_capacity_floor_refuses_a_batch_before_anything_is_touched(
        fleet: Sandbox, spec: AppSpec, lb: LoadBalancer) -> None:
    for name in ("host01", "host02", "host03"):
        fleet.haproxy(f"set server demo/{name} state maint")
    check_capacity(lb, spec, ["host04", "host05"])  # 10 - 3 - 2 = 5 = 50%
    with pytest.raises(CapacityError) as err:
        check_capacity(lb, spec, ["host04", "host05", "host06"])
    assert str(err.value) == (
        "demo: taking out host04, host05, host06 would leave 4 of 10 hosts in service; "
        "traffic.min_in_service is '50%' (5 hosts). Already out per haproxy backend 'demo' via "
        f"unix socket {fleet.haproxy_socket}: host01 (MAINT), host02 (MAINT), host03 (MAINT). "
        "Bring those back into rotation or release fewer hosts at once.")
    fleet.haproxy("set server demo/host04 state drain")
    fleet.haproxy("set server demo/host05 state maint")
    with pytest.raises(CapacityError, match="would leave 4 of 10"):
        pull_out(lb, spec, spec.host("host06"))
    assert haproxy_status(fleet, "host06") == "UP", "a refused pull_out must not touch the host"


# -- errors ------------------------------------------------------------------------------------
def test_unknown_server_names_what_the_backend_has(fleet: Sandbox, spec: AppSpec, lb: LoadBalancer) -> None:
    ghost = GHOST
    listing = ", ".join(f"host{i:02d}" for i in range(1, 11))
    expected = f"no server 'host99' in backend 'demo'; it has: {listing} "
    with pytest.raises(LoadBalancerError, match=f"^{expected}"):
        lb.drain(ghost)
    with pytest.raises(LoadBalancerError, match=f"^{expected}"):
        lb.state(ghost)
    spec = dataclasses.replace(spec, hosts=(*spec.hosts, ghost))  # in the inventory, not in HAProxy
    with pytest.raises(LoadBalancerError, match=f"^{expected}"):
        pull_out(load_balancer_for(spec), spec, spec.host("host01"))
    assert haproxy_status(fleet, "host01") == "UP"
    report = rotation_report(load_balancer_for(spec), spec, spec.hosts)
    assert report.summary().startswith(f"1 of 11 hosts NOT in rotation:\n  host99: {expected}")


def test_unknown_backend_lists_backends(fleet: Sandbox) -> None:
    spec = make_spec(fleet, {"haproxy": {**HAPROXY, "backend": "x"}})
    with pytest.raises(LoadBalancerError, match=r"^no backend 'x' in haproxy at unix socket .*; backends: demo "):
        pull_out(load_balancer_for(spec), spec, spec.hosts[0])
    with pytest.raises(LoadBalancerError, match=r"^no backend 'x' .*; backends: demo "):
        load_balancer_for(spec).enable(spec.hosts[0])


def test_unreachable_lb_names_the_socket(fleet: Sandbox, tmp_path: Path) -> None:
    bad = tmp_path / "no-haproxy.sock"
    spec = make_spec(fleet, {"haproxy": {**HAPROXY, "socket": str(bad)}, "api_deadline": 0.5})
    with pytest.raises(LoadBalancerUnreachable) as err:
        pull_out(load_balancer_for(spec), spec, spec.hosts[0])
    assert str(err.value).startswith(f"host01: pull_out: haproxy backend 'demo' via unix socket {bad} "
                                     f"unreachable for ")
    assert (f"traffic.api_deadline 0.5s) while trying to read the state of the servers: haproxy "
            f"runtime API unreachable at unix socket {bad}: [Errno 2] No such file or directory"
            ) in str(err.value)
    report = rotation_report(load_balancer_for(spec), spec, spec.hosts)
    assert not report.ok and report.summary().startswith("ROTATION UNKNOWN for host01, host02")


# -- outages -----------------------------------------------------------------------------------
@dataclass
class SocketOutage:
    """The admin socket renamed away for `seconds` (HAProxy keeps listening on it), then put back."""

    path: Path
    seconds: float

    def __post_init__(self) -> None:
        self.away = self.path.with_name(self.path.name + ".away")
        self.restorer = threading.Timer(self.seconds, self.end)

    def start(self) -> None:
        os.rename(self.path, self.away)
        self.restorer.start()

    def end(self) -> None:
        if self.away.exists():
            os.rename(self.away, self.path)

    def __enter__(self) -> SocketOutage:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.restorer.cancel()
        self.end()


def test_admin_socket_gone_for_5s_is_waited_out(
        fresh_sandbox: Callable[..., Sandbox], caplog: pytest.LogCaptureFixture) -> None:
    sb = fresh_sandbox(hosts=3)
    spec = make_spec(sb, {"api_deadline": 20, "min_in_service": 1})
    target = spec.host("host02")
    load = Load(sb.frontend_url)
    loader = threading.Thread(target=load.run)
    loader.start()
    try:
        with load_balancer_for(spec) as lb, caplog.at_level(logging.WARNING):
            for step in (pull_out, pull_in):
                caplog.clear()
                started = time.monotonic()
                with SocketOutage(sb.haproxy_socket, 5.0):
                    result = step(lb, spec, target)
                assert time.monotonic() - started >= 4.5, f"{step.__name__} did not meet the outage"
                assert result.state == "ok", result.detail
                waits = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
                assert waits and waits[0].startswith(
                    f"host02: {step.__name__}: load balancer unreachable while trying to ")
                assert "[Errno 2] No such file or directory" in waits[0]
                if step is pull_out:
                    assert haproxy_status(sb, "host02") == "DRAIN"
    finally:
        load.stop.set()
        loader.join(15)
    assert haproxy_status(sb, "host02") == "UP"
    assert "host02" in hosts_serving(sb, 20)
    assert load.sent > 100 and not load.failures, f"{len(load.failures)} failed: {load.failures[:3]}"


def test_admin_socket_gone_past_the_deadline_fails_naming_host_and_deadline(
        fresh_sandbox: Callable[..., Sandbox]) -> None:
    sb = fresh_sandbox(hosts=3)
    spec = make_spec(sb, {"api_deadline": 2, "min_in_service": 1})
    target = spec.host("host03")
    with SocketOutage(sb.haproxy_socket, 10.0), load_balancer_for(spec) as lb:
        started = time.monotonic()
        with pytest.raises(LoadBalancerUnreachable) as err:
            pull_out(lb, spec, target)
        took = time.monotonic() - started
    assert 2 <= took < 5
    message = str(err.value)
    assert message.startswith(f"host03: pull_out: haproxy backend 'demo' via unix socket "
                              f"{sb.haproxy_socket} unreachable for 2.")
    assert "traffic.api_deadline 2s)" in message and "No such file or directory" in message
    assert haproxy_status(sb, "host03") == "UP", "nothing reached HAProxy: the host is untouched"


# -- other transports and providers ------------------------------------------------------------
def test_haproxy_over_ssh_on_the_lb_host(fleet: Sandbox, ssh_conn: None) -> None:
    spec = make_spec(fleet, {"haproxy": {**HAPROXY, "lb_host": "host10"}})
    with load_balancer_for(spec) as lb:
        target = spec.host("host02")
        assert "on host10 (over SSH)" in lb.where()
        assert pull_out(lb, spec, target).data["status"] == "DRAIN"
        assert haproxy_status(fleet, "host02") == "DRAIN"
        assert pull_in(lb, spec, target).data["status"] == "UP"
        with pytest.raises(LoadBalancerError, match=r"^no server 'host99' in backend 'demo'; it has: host01"):
            lb.drain(GHOST)
    spec = make_spec(fleet, {"haproxy": {**HAPROXY, "lb_host": "host10", "socket": "/nonexistent.sock"},
                             "api_deadline": 0.5})
    with pytest.raises(LoadBalancerUnreachable, match=r"unreachable at unix socket /nonexistent.sock on "
                                                      r"host10 \(over SSH\): \[Errno 2\] No such file"):
        load_balancer_for(spec).state(spec.hosts[0])


SOCAT = "socat -t 5 stdio unix-connect:{{ vars.haproxy_socket }}"
# What a team would write: errors come back as text with exit 0, so the command checks the answer.
SET_STATE = ('out=$(echo "set server {{ vars.haproxy_backend }}/{{ host.name }} state %s" | ' + SOCAT
             + '); [ -z "$out" ] || { echo "$out" >&2; exit 1; }')
COMMANDS = {
    "drain": SET_STATE % "drain",
    "enable": SET_STATE % "ready",
    "state": ('echo "show stat" | ' + SOCAT + ' | awk -F, \'$1=="{{ vars.haproxy_backend }}" && '
              '$2=="{{ host.name }}" { split($18, s, " "); print s[1], $5 }\''),
}


@pytest.mark.parametrize("run_on", ["controller", "host"])
def test_command_provider_with_socat(fleet: Sandbox, ssh_conn: None, run_on: str) -> None:
    spec = make_spec(fleet, {"provider": "command", "command": {**COMMANDS, "run_on": run_on},
                             "api_deadline": 0.5})
    with load_balancer_for(spec) as lb:
        target = spec.host("host07")
        step = pull_out(lb, spec, target)
        assert step.data["verified"] and step.data["status"] == "DRAIN"
        assert haproxy_status(fleet, "host07") == "DRAIN"
        assert "host07" not in hosts_serving(fleet, 20)
        step = pull_in(lb, spec, target)
        assert step.data["status"] == "UP" and haproxy_status(fleet, "host07") == "UP"
        if run_on == "controller":
            expected = r"^host99: traffic.command.drain failed \(exit code 1, .*\nNo such server.$"
        else:
            expected = (r"^host99: traffic: traffic.command \(run on the host\) unreachable for .*"
                        r"while trying to drain host99: host99: traffic command: cannot connect to "
                        r"127.0.0.250:22 .*Connection refused \(over SSH; the load balancer command did "
                        r"not run\)\. The load balancer state of host99 is unknown")
        with pytest.raises(LoadBalancerError, match=expected):
            lb.drain(GHOST)


# -- the point of it all -----------------------------------------------------------------------
@dataclass
class Load:
    """~rate req/s through the frontend from one thread; counts every failure."""

    url: str
    rate: float = 50.0
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    served: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            next_at = time.monotonic()
            while not self.stop.is_set():
                self.sent += 1
                try:
                    resp = http.get("/")
                    if resp.status_code == 200:
                        body = resp.json()
                        self.served[body["host"]] += 1
                        self.versions[body["version"]] += 1
                    else:
                        self.failures.append(f"HTTP {resp.status_code}: {resp.text[:80]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                next_at += 1 / self.rate
                time.sleep(max(0.0, next_at - time.monotonic()))


def release_host(spec: AppSpec, host: Host, artifact: FetchedArtifact, version: str) -> None:
    """One host of a rolling release, as the per-host release task runs it."""
    with open_session(spec, host) as session, load_balancer_for(spec) as lb:  # one LB per worker
        stage_release(session, spec, host, version, artifact, "test-run")
        pull_out(lb, spec, host)
        activate_release(session, spec, host, version, "test-run")
        run_checks(session, spec, host, version)
        pull_in(lb, spec, host)


def test_rolling_release_of_all_hosts_under_load_loses_no_request(
        fleet: Sandbox, ssh_conn: None, tmp_path: Path,
        record_property: Callable[[str, object], None], capsys: pytest.CaptureFixture[str]) -> None:
    spec = make_spec(fleet, config_dir=tmp_path)
    artifact = fetch_artifact(spec, "2.0.0", cache_dir=tmp_path / "cache")
    batches = [spec.hosts[:1], spec.hosts[1:4], spec.hosts[4:7], spec.hosts[7:]]  # 1, 3, 3, 3
    load = Load(fleet.frontend_url)
    loader = threading.Thread(target=load.run)
    loader.start()
    started = time.monotonic()
    try:
        time.sleep(0.5)  # load is flowing before the first drain
        for batch in batches:
            check_capacity(load_balancer_for(spec), spec, [h.name for h in batch])
            with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                list(pool.map(lambda h: release_host(spec, h, artifact, "2.0.0"), batch))
        time.sleep(0.5)
    finally:
        load.stop.set()
        loader.join(15)
    seconds = time.monotonic() - started
    record_property("requests_sent", load.sent)
    record_property("requests_failed", len(load.failures))
    with capsys.disabled():
        print(f"\nrolling release 1.0.0 → 2.0.0 of 10 hosts under load: {load.sent} requests in "
              f"{seconds:.1f}s, {len(load.failures)} failed; versions served: {dict(load.versions)}")
    assert not load.failures, f"{len(load.failures)} of {load.sent} requests failed: {load.failures[:5]}"
    assert load.sent >= 40 * seconds * 0.8, f"load too thin to prove anything: {load.sent} in {seconds:.1f}s"
    report = rotation_report(load_balancer_for(spec), spec, spec.hosts)
    assert report.ok, report.summary()
    assert {h.name: fleet.served_version(h.name) for h in spec.hosts} == {h.name: "2.0.0" for h in spec.hosts}
    assert set(load.served) == {h.name for h in spec.hosts}
    assert set(load.versions) == {"1.0.0", "2.0.0"}
