"""Crafted artifacts against the sandbox's real sshd: refused before anything is unpacked.

Each archive is staged as a release would stage it (``stage_release``), pushed from the
controller and pulled by the host from the sandbox's artifact server. A user then checks the
host: the same ``current``, the same releases, no tarball left in the uploads dir, and the
host's own state never offering the crafted version as a rollback target.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import Sandbox
from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import InsufficientSpace, UnsafeArchive, UnsafeArchiveOnHost
from tars_operators.hooks.artifacts import FetchedArtifact
from tars_operators.hooks.ssh import open_session
from tars_operators.steps.stage import stage_release
from tars_operators.steps.state import layout_for, previous_good, read_host_state
from tests.integration.test_steps import demo_spec, served

pytestmark = pytest.mark.integration
TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
         "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}
Member = tuple[str, str, str, int, int]  # name, kind, link target, size, mode


def member(name: str, kind: str = "file", link: str = "", size: int = 2, mode: int = 0o644) -> Member:
    return (name, kind, link, size, mode)


def tar_of(members: list[Member]) -> bytes:
    """An uncompressed tar: a working demo VERSION file first, then the crafted members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, link, size, mode in [member("VERSION")] + members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = TYPES[kind], link, mode
            info.size = size if kind == "file" else 0
            tar.addfile(info, io.BytesIO(bytes(info.size)) if info.size else None)
    return buf.getvalue()


def hidden_after_bad_header() -> bytes:
    """GNU tar skips an unreadable header and unpacks the link behind it; tarfile stops there."""
    return tar_of([])[:1024] + b"garbage!" * 64 + tar_of([member("config", "symlink", "/etc")])[1024:]


def name_read_differently() -> bytes:
    """``evil -> ..`` with bytes in the old GNU header's prefix field: tarfile reads the name
    ``safe/evil`` (a link inside), GNU tar unpacks ``evil`` (a link out)."""
    data = bytearray(tar_of([member("evil", "symlink", "..")]))
    header = slice(1024, 1536)  # after VERSION's header and data block
    data[1024 + 345:1024 + 349] = b"safe"
    data[1024 + 148:1024 + 156] = b" " * 8
    data[1024 + 148:1024 + 156] = b"%06o\0 " % sum(data[header])
    return bytes(data)


CHAIN = [member("a/b/c/d", "dir"), member("a/b/c/d/l", "symlink", "../../../.."),
         member("x", "symlink", "a/b/c/d/l/../../../../.."), member("config", "symlink", "x/tars-escaped")]

# case → (tar bytes or members, artifact.limits overrides, text the refusal must contain)
CASES: dict[str, tuple[Any, dict[str, Any], str]] = {
    "three-link chain out (issue 12)": (CHAIN, {}, "'x' -> 'a/b/c/d/l/../../../../..': symlink leaves the release"),
    "chain, then a file through it": (CHAIN + [member("config/app.json")], {}, "'config/app.json': its path passes through"),
    "absolute link": ([member("config", "symlink", "/etc")], {}, "'config' -> '/etc': symlink is an absolute link"),
    "hard link out": ([member("passwd", "hardlink", "../../../../etc/passwd")], {}, "'passwd': hard link"),
    "metadata inside": ([member(".tars/release.json", size=40)], {}, "'.tars/release.json': under .tars/"),
    "setuid refused": ([member("bin/tool", mode=0o4755)], {"special_bits": "refuse"},
                       "'bin/tool': setuid/setgid/sticky bits (mode 4755)"),
    "device node": ([member("dev/mem", "chr")], {}, "'dev/mem': character device not allowed"),
    "fifo": ([member("run/pipe", "fifo")], {}, "'run/pipe': FIFO not allowed"),
    "100,000 members": ([member(f"m/{i}", size=0) for i in range(100_000)], {},
                        "member #20001 'm/19999': the archive has more than 20000 members"),
    "one member above the limit": ([member("blob", size=3 << 20)], {"max_member_mb": 2},
                                   "'blob': unpacks to 3.0 MiB, more than artifact.limits.max_member_mb (2)"),
    "hidden behind a bad header": (hidden_after_bad_header(), {}, "data after the end of the archive"),
    "a name tar reads differently": (name_read_differently(), {}, "'safe/evil': its header has a name prefix"),
}


@pytest.fixture(scope="module")
def baseline(sandbox: Sandbox) -> Sandbox:
    """The session fleet reset once: every case only reads the hosts (refusals change nothing)."""
    if not sandbox.is_up():
        sandbox.up(hosts=10)
    sandbox.reset()
    return sandbox


def snapshot(host: Host) -> dict[str, Any]:
    """What a user looks at: the link, the releases, every path in them, the uploads dir."""
    root = Path(host.vars["deploy_root"])
    uploads = root / ".tars-tmp"
    return {"current": os.readlink(root / "current"),
            "releases": sorted(p.name for p in (root / "releases").iterdir()),
            "files": sorted(str(p.relative_to(root)) for p in (root / "releases").rglob("*")),
            "uploads": sorted(p.name for p in uploads.iterdir()) if uploads.exists() else []}


@pytest.fixture
def serve(baseline: Sandbox) -> Iterator[Any]:
    """Publish crafted bytes on the sandbox's artifact server; removed afterwards."""
    published: list[Path] = []

    def publish(version: str, data: bytes) -> str:
        path = baseline.artifacts_dir / f"demo-{version}.tar.gz"
        path.write_bytes(data)
        published.append(path)
        return f"{baseline.artifact_base}/demo-{version}.tar.gz"

    try:
        yield publish
    finally:
        for path in published:
            path.unlink(missing_ok=True)


def spec_with(fleet: Sandbox, tmp_path: Path, limits: dict[str, Any]) -> AppSpec:
    spec = demo_spec(fleet, tmp_path / "config")
    artifact = spec.config.artifact.model_copy(update={"limits": spec.config.artifact.limits.model_copy(update=limits)})
    return AppSpec(spec.config.model_copy(update={"artifact": artifact}), spec.hosts, spec.source, spec.global_vars)


def assert_untouched(spec: AppSpec, host: Host, before: dict[str, Any], version: str) -> None:
    assert snapshot(host) == before
    assert served(host)["version"] == "1.0.0"
    with open_session(spec, host) as s:
        state = read_host_state(s, layout_for(spec, host))
    assert state.current == "1.0.0" and state.release(version) is None
    assert previous_good(state) == "1.0.0" and previous_good(state, exclude="1.0.0") is None


@pytest.mark.parametrize("case", list(CASES))
def test_crafted_archive_is_refused_pushed_and_pulled(baseline: Sandbox, serve: Any, tmp_path: Path, case: str) -> None:
    content, limits, named = CASES[case]
    data = gzip.compress(content if isinstance(content, bytes) else tar_of(content))
    sha, version = hashlib.sha256(data).hexdigest(), f"9.{list(CASES).index(case)}.0"
    spec = spec_with(baseline, tmp_path, limits)
    host = spec.hosts[0]
    before = snapshot(host)
    path = tmp_path / "crafted.tar.gz"
    path.write_bytes(data)
    # Push: the controller refuses it before any connection is made.
    with open_session(spec, host) as s:
        started = time.monotonic()
        with pytest.raises(UnsafeArchive, match="refusing unsafe archive") as err:
            stage_release(s, spec, host, version, FetchedArtifact(version, "file:///x", sha, path, len(data)), "crafted")
        assert named in str(err.value) and s._hook is None
        assert time.monotonic() - started < 20
    assert_untouched(spec, host, before, version)
    # Pull: the host downloads it, its own check refuses it and removes the tarball.
    url = serve(version, data)
    with open_session(spec, host) as s, pytest.raises(UnsafeArchiveOnHost) as err:
        stage_release(s, spec, host, version, FetchedArtifact(version, url, sha), "crafted")
    assert err.value.host == host.name and err.value.step == "stage" and err.value.exit_code == 66
    assert "refusing unsafe archive" in str(err.value) and named in str(err.value)
    assert_untouched(spec, host, before, version)


@pytest.mark.parametrize("delivery", ["push", "pull"])
def test_too_little_free_space_is_refused_before_unpacking(baseline: Sandbox, serve: Any, tmp_path: Path,
                                                           delivery: str) -> None:
    spec = spec_with(baseline, tmp_path, {"min_free_mb": float(1 << 40)})
    host = spec.hosts[0]
    before = snapshot(host)
    data = gzip.compress(tar_of([member("bin/app", size=1 << 20)]))
    sha, version = hashlib.sha256(data).hexdigest(), "9.90.0"
    path = tmp_path / "big.tar.gz"
    path.write_bytes(data)
    art = (FetchedArtifact(version, "file:///x", sha, path, len(data)) if delivery == "push"
           else FetchedArtifact(version, serve(version, data), sha))
    with open_session(spec, host) as s, pytest.raises(InsufficientSpace) as err:
        stage_release(s, spec, host, version, art, "crafted")
    message = str(err.value)
    assert err.value.host == host.name and err.value.step == "stage" and err.value.exit_code == 70
    assert f"not enough free space under {host.vars['deploy_root']}" in message
    assert "the release unpacks to 1025 KiB" in message  # 1 MiB + VERSION and "min_free_mb" in message
    assert_untouched(spec, host, before, version)


@pytest.mark.parametrize("delivery", ["push", "pull"])
def test_setuid_bits_are_stripped_on_the_host(baseline: Sandbox, serve: Any, tmp_path: Path, delivery: str) -> None:
    spec = spec_with(baseline, tmp_path, {"special_bits": "strip"})
    host = spec.hosts[1 if delivery == "push" else 2]
    data = gzip.compress(tar_of([member("bin/tool", mode=0o6755), member("shared-tmp", "dir", mode=0o1777),
                                 member("bin/alias", "symlink", "tool")]))
    sha, version = hashlib.sha256(data).hexdigest(), f"9.9{1 if delivery == 'push' else 2}.0"
    path = tmp_path / "suid.tar.gz"
    path.write_bytes(data)
    art = (FetchedArtifact(version, "file:///x", sha, path, len(data)) if delivery == "push"
           else FetchedArtifact(version, serve(version, data), sha))
    with open_session(spec, host) as s:
        assert stage_release(s, spec, host, version, art, "suid").state == "ok"
    release = Path(host.vars["deploy_root"]) / "releases" / version
    assert (release / "bin/tool").stat().st_mode & 0o7777 == 0o755
    assert (release / "shared-tmp").stat().st_mode & 0o7777 == 0o777
    assert os.readlink(release / "bin/alias") == "tool"
