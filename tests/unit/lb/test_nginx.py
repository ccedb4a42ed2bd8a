"""nginx upstream rewriting (pure) and the compare-and-swap write script (run with a fake nginx)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from tars_operators.errors import LoadBalancerError
from tars_operators.hooks.lb.nginx import NginxBalancer, set_down, upstream_servers
from tars_operators.hooks.lb.nginx_scripts import read_command, write_command
from tars_operators.hooks.lb.remote import CommandOutput, local_runner
from tests.unit.lb.conftest import MakeSpec

pytestmark = pytest.mark.unit

CONF = """\
# managed partly by Tars
upstream other {
    server 127.0.0.11:18080;
}

upstream demo_app {
    zone demo 64k;
    server 127.0.0.11:18080 weight=3 max_fails=2;  # dc1
    server 127.0.0.12:18080;
    # server 127.0.0.13:18080;
    server 127.0.0.13:18080 down;
    keepalive 16;
}
"""


def test_servers_of_the_named_upstream_only() -> None:
    servers = upstream_servers(CONF, "demo_app")
    assert [(s.address, s.down) for s in servers] == [
        ("127.0.0.11:18080", False), ("127.0.0.12:18080", False), ("127.0.0.13:18080", True)]


def test_mark_down_keeps_parameters_comments_and_other_blocks() -> None:
    new = set_down(CONF, "demo_app", "127.0.0.11:18080", True)
    assert "    server 127.0.0.11:18080 weight=3 max_fails=2 down;  # dc1\n" in new
    assert new.startswith("# managed partly by Tars\nupstream other {\n    server 127.0.0.11:18080;\n")
    assert new.count("down") == CONF.count("down") + 1
    assert set_down(new, "demo_app", "127.0.0.11:18080", False) == CONF


def test_mark_down_is_idempotent() -> None:
    once = set_down(CONF, "demo_app", "127.0.0.13:18080", True)
    assert once == CONF
    assert "server 127.0.0.13:18080;" in set_down(CONF, "demo_app", "127.0.0.13:18080", False)


def test_unknown_server_lists_what_the_upstream_has() -> None:
    with pytest.raises(LoadBalancerError) as err:
        set_down(CONF, "demo_app", "127.0.0.99:18080", True)
    assert str(err.value).startswith(
        "no server '127.0.0.99:18080' in nginx upstream 'demo_app'; it has: "
        "127.0.0.11:18080, 127.0.0.12:18080, 127.0.0.13:18080")


def test_unknown_upstream_lists_upstreams() -> None:
    with pytest.raises(LoadBalancerError, match="no upstream 'web'.*; upstreams: other, demo_app"):
        upstream_servers(CONF, "web")


def test_server_name_is_not_a_regex_and_prefixes_do_not_match() -> None:
    text = "upstream u {\n    server 10.0.0.1:80;\n    server 10.0.0.10:80;\n}\n"
    assert set_down(text, "u", "10.0.0.1:80", True) == (
        "upstream u {\n    server 10.0.0.1:80 down;\n    server 10.0.0.10:80;\n}\n")
    with pytest.raises(LoadBalancerError):
        set_down(text, "u", "10.0.0.1.:80", True)


# -- the write script, for real, with a fake `nginx` first in PATH ---------------------------------
@pytest.fixture
def fake_nginx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`nginx -t` passes unless $tmp/nginx-invalid exists; every call is logged."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nginx"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "nginx $*" >> {tmp_path}/nginx.log\n'
        f'if [ "$1" = -t ] && [ -e {tmp_path}/nginx-invalid ]; then\n'
        '  echo "nginx: [emerg] invalid parameter" >&2; exit 1; fi\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_write_swaps_tests_and_reloads(fake_nginx: Path) -> None:
    conf = fake_nginx / "demo upstream.conf"  # a space: every path is quoted
    conf.write_text(CONF)
    conf.chmod(0o640)
    new = set_down(CONF, "demo_app", "127.0.0.12:18080", True)
    out = local_runner(write_command(str(conf), _sha(conf), new, "nginx -s reload"), 10)
    assert out.exit_code == 0, out.stderr
    assert conf.read_text() == new
    assert stat.S_IMODE(conf.stat().st_mode) == 0o640
    assert (fake_nginx / "nginx.log").read_text() == "nginx -t\nnginx -s reload\n"


def test_write_refuses_when_the_file_changed_since_read(fake_nginx: Path) -> None:
    conf = fake_nginx / "u.conf"
    conf.write_text(CONF)
    out = local_runner(write_command(str(conf), "0" * 64, "x", "nginx -s reload"), 10)
    assert out.exit_code == 75 and "changed since read" in out.stderr
    assert conf.read_text() == CONF
    assert not (fake_nginx / "nginx.log").exists()


def test_write_restores_the_file_when_nginx_rejects_it(fake_nginx: Path) -> None:
    conf = fake_nginx / "u.conf"
    conf.write_text(CONF)
    (fake_nginx / "nginx-invalid").touch()
    out = local_runner(write_command(str(conf), _sha(conf), "broken {", "nginx -s reload"), 10)
    assert out.exit_code == 65 and "invalid parameter" in out.stderr
    assert conf.read_text() == CONF
    assert (fake_nginx / "nginx.log").read_text() == "nginx -t\n"


def test_read_command_marks_the_sha(tmp_path: Path) -> None:
    conf = tmp_path / "u.conf"
    conf.write_text(CONF)
    out = local_runner(read_command(str(conf)), 10)
    assert out.stdout == f"@@sha256 {_sha(conf)}\n{CONF}"


def test_balancer_drains_and_enables_through_a_runner(fake_nginx: Path, make_spec: MakeSpec) -> None:
    conf = fake_nginx / "u.conf"
    conf.write_text(CONF.replace("127.0.0.13:18080 down", "127.0.0.13:18080"))
    spec = make_spec({"provider": "nginx", "nginx": {
        "lb_host": "lb1", "upstream_file": str(conf), "upstream": "demo_app"}}, hosts=3)
    lb = NginxBalancer(spec, runner=local_runner)
    host = spec.hosts[1]
    assert lb.server_name(host) == "127.0.0.12:18080"
    lb.drain(host)
    assert lb.state(host).status == "MAINT" and lb.state(host).drained
    assert lb.states(spec.hosts)["host01"].status == "UP"
    lb.enable(host)
    assert lb.state(host).confirmed_up
    assert (fake_nginx / "nginx.log").read_text().count("nginx -s reload") == 2


def test_balancer_retries_when_another_worker_wrote_first(make_spec: MakeSpec, tmp_path: Path) -> None:
    spec = make_spec({"provider": "nginx", "nginx": {
        "lb_host": "lb1", "upstream_file": "/etc/nginx/u.conf", "upstream": "demo_app"}})
    replies = [CommandOutput(0, "@@sha256 a\n" + CONF, ""), CommandOutput(75, "", "changed"),
               CommandOutput(0, "@@sha256 b\n" + CONF, ""), CommandOutput(0, "", "")]
    sent: list[str] = []

    def runner(command: str, timeout: float) -> CommandOutput:
        sent.append(command)
        return replies.pop(0)

    NginxBalancer(spec, runner=runner).drain(spec.hosts[0])
    assert not replies
    assert "= a ]" in sent[1] and "= b ]" in sent[3]
