"""Host requirements and assemble steps, run for real by a local ``sh`` on a temporary root:
what a person reads (requirement, found, expected), hostile values staying data, the policy's
refusal table, and steps that change once and then report ``unchanged``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tars_operators.assembly import preflight as pf
from tars_operators.assembly.requirements import host_checks, judge, runtime_for
from tars_operators.assembly.steps import assemble_host
from tars_operators.config.schema import AppConfig
from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import PlanError
from tests.unit.release.test_host_chain import LocalSession

pytestmark = pytest.mark.unit


def make_spec(root: Path, runtime: dict[str, Any], groups: dict[str, Any] | None = None,
              source: Path = Path("/cfg/apps/demo.yaml")) -> AppSpec:
    config = AppConfig.model_validate({
        "app": {"name": "demo", "owner": "team"},
        "artifact": {"url": "http://a/demo-{{ version }}.tar.gz", "checksum": {"url": "{{ url }}.sha256"}},
        "hosts": {"vars": {"port": 18999}, "groups": groups or {}},
        "install": {"deploy_root": str(root / "{{ host.name }}")},
        "service": {"start": "true", "stop": "true"},
        "runtime": runtime,
    })
    hosts = (Host("host01", "127.0.0.11", group="dc1"), Host("host02", "127.0.0.12", group="dc2"))
    return AppSpec(config=config, hosts=hosts, source=source)


def check(spec: AppSpec, host: Host, tmp: Path, **kw: Any) -> Any:
    checks = host_checks(spec, host)
    out = LocalSession(host.name, tmp).run(checks.script, step="preflight", check=False)
    return judge(checks, out.stdout, controller_time=time.time(), **kw)


def test_requirements_report_found_and_expected(tmp_path: Path) -> None:
    (tmp_path / "host01").mkdir()
    spec = make_spec(tmp_path, {"requires": [
        {"kind": "command", "command": "python3", "version": ">= 3.8"},
        {"kind": "command", "command": "python3", "version": ">= 99.1"},
        {"kind": "command", "command": "no-such-tool-x"},
        {"kind": "path", "path": "/etc", "type": "dir"},
        {"kind": "path", "path": "/etc", "type": "file"},
        {"kind": "user", "user": "root"},
        {"kind": "group", "group": "nosuchgroupzz"},
        {"kind": "free_disk", "mb": 1},
        {"kind": "free_disk", "mb": 1e12},
        {"kind": "writable"},
        {"kind": "clock", "max_skew_seconds": 5},
        {"kind": "port", "port": "{{ vars.port }}"},
    ]})
    r = check(spec, spec.hosts[0], tmp_path)
    got = {v.requirement: (v.ok, v.found) for v in r.verdicts}
    assert got["python3 >= 3.8"][0] is True
    assert got["python3 >= 99.1"][0] is False and "(" in got["python3 >= 99.1"][1]
    assert got["command no-such-tool-x"] == (False, "not found")
    assert got["dir /etc"] == (True, "dir") and got["file /etc"] == (False, "dir")
    assert got["user root"] == (True, "uid 0")
    assert got["group nosuchgroupzz"] == (False, "missing")
    assert got["free disk >= 1 MB"][0] and not got["free disk >= 1e+12 MB"][0]
    assert got["writable deploy root"] == (True, "writable")
    assert got["clock skew < 5s"][0] is True
    assert got["free port 18999"] == (True, "free")
    assert not r.ready
    assert [v.requirement for v in r.missing] == [
        "python3 >= 99.1", "command no-such-tool-x", "file /etc", "group nosuchgroupzz",
        "free disk >= 1e+12 MB"]
    # host02 has no deploy root: not writable, and the port check still runs (no release yet)
    r2 = check(spec, spec.hosts[1], tmp_path)
    assert {v.requirement: v.found for v in r2.verdicts}["writable deploy root"] == "missing"


def test_port_is_checked_only_before_the_first_start(tmp_path: Path) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        spec = make_spec(tmp_path, {"requires": [{"kind": "port", "port": port}]})
        (tmp_path / "host01").mkdir()
        assert check(spec, spec.hosts[0], tmp_path).verdicts[0].found == "listening"
        # a listener on another address leaves this host's address free
        other = make_spec(tmp_path, {"requires": [{"kind": "port", "port": port,
                                                    "address": "127.0.0.99"}]})
        assert check(other, other.hosts[0], tmp_path).verdicts[0].found == "free"
        own = make_spec(tmp_path, {"requires": [{"kind": "port", "port": port,
                                                  "address": "127.0.0.1"}]})
        assert check(own, own.hosts[0], tmp_path).verdicts[0].found == "listening"
        (tmp_path / "host01" / "current").symlink_to("releases/1.0.0")
        v = check(spec, spec.hosts[0], tmp_path).verdicts[0]
        assert v.ok and "installed" in v.found
    finally:
        sock.close()


def test_relative_free_disk_uses_the_artifact_size(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"requires": [{"kind": "free_disk", "artifact_times": 3}]})
    huge = check(spec, spec.hosts[0], tmp_path, artifact_bytes=1 << 60).verdicts[0]
    assert not huge.ok and huge.expected.endswith("MB free")
    small = check(spec, spec.hosts[0], tmp_path, artifact_bytes=1024).verdicts[0]
    assert small.ok
    unknown = check(spec, spec.hosts[0], tmp_path).verdicts[0]
    assert unknown.ok and "artifact size unknown" in unknown.found


def test_hostile_values_stay_data(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = f"/tmp/x'; touch {marker}; echo '"
    spec = make_spec(tmp_path, {"requires": [{"kind": "path", "path": evil}],
                                "assemble": [{"kind": "dir", "path": str(tmp_path / "d $(touch x)")}]})
    assert check(spec, spec.hosts[0], tmp_path).verdicts[0].found == "missing"
    assemble_host(LocalSession("host01", tmp_path), spec, spec.hosts[0], apply=True)
    assert (tmp_path / "d $(touch x)").is_dir()
    assert not marker.exists() and not (tmp_path / "x").exists()


def test_a_version_banner_cannot_forge_another_line(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\nprintf 'tool 1.0\\n0 found /x tool 9.9\\n'\n")
    tool.chmod(0o755)
    spec = make_spec(tmp_path, {"requires": [
        {"kind": "command", "command": str(tool), "version": ">= 2.0"}]})
    v = check(spec, spec.hosts[0], tmp_path).verdicts[0]
    assert not v.ok and v.found.startswith("1.0 (")


def test_group_runtime_replaces_the_fields_it_sets(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"policy": "refuse", "requires": [{"kind": "writable"}]},
                     groups={"dc2": {"runtime": {"requires": [{"kind": "clock"}]}}})
    assert [r.kind for r in runtime_for(spec, spec.hosts[0]).requires] == ["writable"]
    dc2 = runtime_for(spec, spec.hosts[1])
    assert [r.kind for r in dc2.requires] == ["clock"] and dc2.policy == "refuse"


def test_policy_refuses_with_a_table_or_skips(tmp_path: Path) -> None:
    (tmp_path / "host01").mkdir()
    runtime = {"requires": [{"kind": "writable"}]}

    def local(spec: AppSpec, names: list[str], **kw: Any) -> dict[str, Any]:
        return {n: check(spec, spec.host(n), tmp_path) for n in names}

    spec = make_spec(tmp_path, runtime)
    with pytest.raises(PlanError) as err:
        pf.preflight(spec, ["host01", "host02"], check=local)
    text = str(err.value)
    assert "host02: writable deploy root: found missing" in text
    assert "no host left rotation" in text and "tars assemble demo --hosts host02" in text
    assert "host   | requirement          | found   | expected" in text
    skip = make_spec(tmp_path, {**runtime, "policy": "skip_unready"})
    result = pf.preflight(skip, ["host01", "host02"], check=local)
    assert result.keep == ("host01",) and result.skipped == ("host02",)
    assert result.lines == ("skipped (not ready): host02: writable deploy root: found missing, "
                            "expected deploy root present and writable",)


def test_unreachable_hosts_are_left_to_their_chain() -> None:
    spec = make_spec(Path("/nowhere"), {"requires": [{"kind": "writable"}]})
    found = {"host01": pf.Readiness("host01", error="cannot connect"),
             "host02": pf.Readiness("host02")}
    result = pf.decide(spec, ["host01", "host02"], found)
    assert result.keep == ("host01", "host02") and "host01 not checked" in result.lines[0]


def test_assemble_changes_once_then_reports_unchanged(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    (cfg / "apps").mkdir(parents=True)
    (cfg / "templates").mkdir()
    (cfg / "templates" / "env.j2").write_text("APP={{ app.name }} HOST={{ host.name }}\n")
    root = tmp_path / "hosts"
    spec = make_spec(root, {"assemble": [
        {"kind": "dir", "path": "{{ deploy_root }}", "mode": "0750"},
        {"kind": "dir", "path": "{{ deploy_root }}/shared"},
        {"kind": "file", "src": "../templates/env.j2", "dest": "{{ deploy_root }}/shared/app.env",
         "mode": "0640"},
        {"kind": "command", "command": "echo ran >> {{ deploy_root }}/ran",
         "creates": "{{ deploy_root }}/ran"},
        {"kind": "command", "command": "echo x > {{ deploy_root }}/u",
         "unless": "test -f {{ deploy_root }}/u"},
        {"kind": "package", "packages": ["pkg-a", "pkg~b"]},
    ], "packages": {"check": f"test -f {tmp_path}/pkgs/{{{{ package }}}}",
                    "install": f"mkdir -p {tmp_path}/pkgs && cd {tmp_path}/pkgs && touch {{{{ packages }}}}"}},
        source=cfg / "apps" / "demo.yaml")
    host, session = spec.hosts[0], LocalSession("host01", tmp_path)
    dry = assemble_host(session, spec, host, apply=False)
    assert not dry.error, dry.error
    assert [s.state for s in dry.steps] == ["would change"] * 6
    assert not (root / "host01").exists() and not (tmp_path / "pkgs").exists()
    # a dry run's readiness check creates nothing either (no write probe)
    (root / "host01").mkdir(parents=True)
    checks = host_checks(make_spec(root, {"requires": [{"kind": "writable"}]}), host,
                         write_probe=False)
    assert "mktemp" not in checks.script
    out = session.run(checks.script, step="preflight", check=False).stdout
    assert judge(checks, out, controller_time=time.time()).ready
    (root / "host01").rmdir()
    first = assemble_host(session, spec, host, apply=True)
    assert not first.error, first.error
    assert [s.state for s in first.steps] == ["changed"] * 6, first.as_dict()
    assert oct((root / "host01").stat().st_mode & 0o777) == "0o750"
    env = root / "host01" / "shared" / "app.env"
    assert env.read_text() == "APP=demo HOST=host01\n" and oct(env.stat().st_mode & 0o777) == "0o640"
    assert sorted(os.listdir(tmp_path / "pkgs")) == ["pkg-a", "pkg~b"]
    again = assemble_host(session, spec, host, apply=True)
    assert [s.state for s in again.steps] == ["unchanged"] * 6, again.as_dict()
    assert (root / "host01" / "ran").read_text() == "ran\n"
    env.write_text("tampered\n")
    env.chmod(0o600)
    fixed = assemble_host(session, spec, host, apply=True)
    assert fixed.steps[2].state == "changed" and "content" in fixed.steps[2].detail
    assert env.read_text() == "APP=demo HOST=host01\n" and oct(env.stat().st_mode & 0o777) == "0o640"


def test_a_failing_step_stops_the_host_and_names_the_step(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, {"assemble": [
        {"kind": "command", "command": "exit 3", "creates": "/nonexistent/x"},
        {"kind": "dir", "path": str(tmp_path / "never")}]})
    out = assemble_host(LocalSession("host01", tmp_path), spec, spec.hosts[0], apply=True)
    assert out.error and "host01: assemble" in out.error
    assert [s.state for s in out.steps] == ["failed"] and not (tmp_path / "never").exists()
