"""nginx drains that really drain: the reload is verified (exit status, new workers) and undone when
it fails; a drain waits for the old workers (requests in flight) or a configured time.

Run for real through a local shell: a fake `nginx -t` first in PATH and a fake master process
that, like nginx, answers SIGHUP with a new generation of workers and lets the old ones exit
once their requests are done (here: once the test removes the `inflight` file).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tars_operators.errors import LoadBalancerError
from tars_operators.hooks.lb.nginx import NginxBalancer
from tars_operators.hooks.lb.nginx_scripts import alive_command, parse_old_workers
from tars_operators.hooks.lb.remote import local_runner
from tars_operators.steps.traffic import pull_in, pull_out
from tests.polling import poll
from tests.unit.lb.conftest import MakeSpec
from tests.unit.lb.test_nginx import CONF, fake_nginx  # noqa: F401 — the fixture

pytestmark = pytest.mark.unit

FAKE_MASTER = r"""
import os, pathlib, signal, subprocess, sys, time
d = pathlib.Path(sys.argv[1])
# A worker retitles itself (same pid, like nginx) when told to stop accepting (USR1 here).
# (Spelled "$s down" so the title only appears once the worker is retitled.)
WORKER = ("s=shutting; trap 'exec -a \"nginx: worker process is $s down\" sleep 600' USR1; "
          "while :; do sleep 0.02; done")
def spawn():
    return [subprocess.Popen(["nginx: worker process", "-c", WORKER], executable="/bin/bash")
            for _ in range(2)]
workers, retired = spawn(), []
def hup(*_):
    global workers
    if (d / "reject").exists():  # like a master that cannot apply the new file
        return
    old, workers = workers, spawn()
    if not (d / "slow-quit").exists():  # else: the old ones keep accepting (the test checks)
        for w in old:
            w.send_signal(signal.SIGUSR1)
    retired.extend(old)
def term(*_):
    for w in workers + retired:
        w.kill(); w.wait()
    sys.exit(0)
signal.signal(signal.SIGHUP, hup)
signal.signal(signal.SIGTERM, term)
(d / "nginx.pid").write_text(str(os.getpid()))
while True:
    time.sleep(0.02)
    if retired and not (d / "inflight").exists():
        for w in retired:
            w.kill(); w.wait()
        retired.clear()
"""


@pytest.fixture
def master(fake_nginx: Path) -> Iterator[Path]:  # noqa: F811
    """The fake master running; yields its directory (nginx.pid, inflight, reject)."""
    script = fake_nginx / "master.py"
    script.write_text(FAKE_MASTER)
    proc = subprocess.Popen([sys.executable, str(script), str(fake_nginx)])
    try:
        poll(lambda: (fake_nginx / "nginx.pid").exists(), 10, "the fake master's pid file")
        yield fake_nginx
    finally:
        proc.terminate()
        proc.wait(10)


def _balancer(make_spec: MakeSpec, d: Path, **traffic: object) -> NginxBalancer:
    conf = d / "upstream.conf"
    if not conf.exists():
        conf.write_text(CONF.replace("127.0.0.13:18080 down", "127.0.0.13:18080"))
    nginx = {"lb_host": "lb1", "upstream_file": str(conf), "upstream": "demo_app",
             "pid_file": str(d / "nginx.pid"), "reload": f"kill -HUP $(cat {d}/nginx.pid)"}
    nginx.update(traffic.pop("nginx", {}))  # type: ignore[arg-type]
    spec = make_spec({"provider": "nginx", "nginx": nginx, **traffic}, hosts=3)
    lb = NginxBalancer(spec, runner=local_runner)
    lb.poll_interval = 0.02
    return lb


def _workers(d: Path) -> tuple[int, ...]:
    pid = int((d / "nginx.pid").read_text())
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return tuple(int(p) for p in out.stdout.split())


def test_drain_waits_for_the_old_workers_to_finish_requests_in_flight(
        master: Path, make_spec: MakeSpec) -> None:
    lb = _balancer(make_spec, master, drain_timeout=20)
    host = lb.spec.hosts[1]
    before = _workers(master)
    (master / "inflight").touch()
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.update(step=pull_out(lb, lb.spec, host),
                                                           at=time.monotonic()))
    thread.start()
    poll(lambda: "127.0.0.12:18080 down;" in (master / "upstream.conf").read_text(), 10,
         "the server marked down")
    poll(lambda: set(_workers(master)) - set(before), 10, "new workers after the reload")
    assert thread.is_alive(), "pull_out returned while the old workers still serve requests"
    assert local_runner(alive_command(before), 5).stdout.split() == [str(p) for p in before]
    (master / "inflight").unlink()
    released = time.monotonic()
    thread.join(20)
    step = result["step"]
    assert result["at"] >= released  # type: ignore[operator]
    assert step.state == "ok" and step.data["verified"] and not step.data["forced_maint"]  # type: ignore[attr-defined]
    assert (step.data["status"], step.data["sessions"]) == ("MAINT", 0)  # type: ignore[attr-defined]
    assert local_runner(alive_command(before), 5).stdout.strip() == ""


def test_drain_timeout_with_old_workers_still_busy(master: Path, make_spec: MakeSpec) -> None:
    lb = _balancer(make_spec, master, drain_timeout=0.3)
    (master / "inflight").touch()
    step = pull_out(lb, lb.spec, lb.spec.hosts[0])
    assert step.data["forced_maint"] is True and step.data["status"] == "MAINT"
    assert step.detail == "drain timeout 0.3s with requests possibly left; forced MAINT"


def test_pull_in_reloads_verified(master: Path, make_spec: MakeSpec) -> None:
    lb = _balancer(make_spec, master, drain_timeout=5)
    host = lb.spec.hosts[2]
    pull_out(lb, lb.spec, host)
    before = _workers(master)
    step = pull_in(lb, lb.spec, host)
    assert step.data["status"] == "UP"
    assert "127.0.0.13:18080;" in (master / "upstream.conf").read_text()
    assert not set(before) & set(_workers(master)), "pull_in returned before nginx applied the file"


def test_failed_reload_restores_the_file_and_names_host_and_stderr(
        master: Path, make_spec: MakeSpec) -> None:
    lb = _balancer(make_spec, master, nginx={
        "reload": "echo 'nginx: [emerg] bind() to 0.0.0.0:80 failed (98: Address in use)' >&2; exit 1"})
    conf = master / "upstream.conf"
    original = conf.read_text()
    with pytest.raises(LoadBalancerError) as err:
        pull_out(lb, lb.spec, lb.spec.hosts[0])
    message = str(err.value)
    assert message.startswith("host01: nginx reload not applied on lb1 (")
    assert "exit 66): reload failed: nginx: [emerg] bind() to 0.0.0.0:80 failed" in message
    assert f"{conf} restored to its previous content" in message
    assert conf.read_text() == original, "the file says down while nginx still routes to the host"


def test_a_master_that_does_not_apply_the_file_is_caught(master: Path, make_spec: MakeSpec) -> None:
    """`nginx -s reload` exits 0 even when the master then rejects the file: no new workers."""
    lb = _balancer(make_spec, master)
    lb.renew_timeout = 0.5
    (master / "reject").touch()
    conf = master / "upstream.conf"
    original = conf.read_text()
    with pytest.raises(LoadBalancerError) as err:
        lb.drain(lb.spec.hosts[0])
    assert "did not replace its workers within 0.5s of the reload: it did not apply the file" in str(err.value)
    assert "restored to its previous content" in str(err.value)
    assert conf.read_text() == original


def test_a_file_changed_after_a_failed_reload_is_not_clobbered(fake_nginx: Path) -> None:  # noqa: F811
    """The restore is sha-guarded: a file someone rewrote meanwhile is left as it is."""
    from tars_operators.hooks.lb.nginx_scripts import write_command

    conf = fake_nginx / "u.conf"
    conf.write_text(CONF)
    import hashlib

    sha = hashlib.sha256(CONF.encode()).hexdigest()
    reload = f"echo 'someone else' > {conf}; exit 1"  # the file changes under the reload
    out = local_runner(write_command(str(conf), sha, "new\n", reload,
                                     pid_file=str(fake_nginx / "none.pid")), 10)
    assert out.exit_code == 66 and "changed meanwhile: NOT restored" in out.stderr
    assert conf.read_text() == "someone else\n"


@pytest.mark.parametrize(("drain_seconds", "waited"), [(0.3, 0.3), (None, 0.5)])
def test_unseen_workers_mean_a_fixed_wait(
        fake_nginx: Path, make_spec: MakeSpec, caplog: pytest.LogCaptureFixture,  # noqa: F811
        drain_seconds: float | None, waited: float) -> None:
    lb = _balancer(make_spec, fake_nginx, drain_timeout=0.5, nginx={
        "pid_file": str(fake_nginx / "no-such.pid"), "reload": "true",
        "drain_seconds": drain_seconds})
    with caplog.at_level(logging.WARNING):
        step = pull_out(lb, lb.spec, lb.spec.hosts[0])
    assert step.seconds >= waited and step.data["status"] == "MAINT"
    assert ("cannot verify the drain" in caplog.text) is (drain_seconds is None)


def test_old_workers_are_parsed() -> None:
    assert parse_old_workers("@@old-workers 12 13 \n") == (12, 13)
    assert parse_old_workers("@@old-workers ?\n") is None
    assert parse_old_workers("") is None


def test_new_workers_are_not_enough_while_old_ones_still_accept(master: Path, make_spec: MakeSpec) -> None:
    """Between starting new workers and telling the old ones to stop, nginx still routes with
    the old file: a reload counts as applied only once every old worker is shutting down."""
    lb = _balancer(make_spec, master)
    lb.renew_timeout = 0.5
    (master / "slow-quit").touch()
    (master / "inflight").touch()  # the old workers stay (accepting) past the renew timeout
    with pytest.raises(LoadBalancerError, match="did not replace its workers within 0.5s"):
        lb.drain(lb.spec.hosts[0])
