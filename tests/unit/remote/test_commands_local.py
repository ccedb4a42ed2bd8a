"""The generated shell scripts, run for real by a local shell on a deploy root with a hostile name."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tars_operators.config.schema import ArchiveLimits
from tars_operators.remote.commands import (
    EXIT_IS_CURRENT,
    EXIT_NO_SPACE,
    EXIT_SHA_MISMATCH,
    EXIT_UNSAFE,
    InstallPlan,
    TemplateFile,
    activate_command,
    install_command,
    remove_releases_command,
    state_command,
)
from tars_operators.remote.layout import ReleaseLayout
from tars_operators.steps.state import parse_state

pytestmark = pytest.mark.unit
HOSTILE_DIR = "it's a $(touch pwned) `touch pwned2` dir; rm -rf x"


def sh(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Like sshd: the shell leads its own session, stdin stays open until it exits.
    proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.wait(30)
    proc.stdin.close()  # type: ignore[union-attr]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def tarball(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None,
            modes: dict[str, int] | None = None) -> tuple[Path, str]:
    import hashlib

    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), (modes or {}).get(name, 0o755)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / HOSTILE_DIR / "app"
    path.mkdir(parents=True)
    return path


def plan_for(root: Path, version: str, tar: Path, sha: str, **kwargs: object) -> InstallPlan:
    layout = ReleaseLayout(str(root))
    uploads = root / ".tars-tmp"
    uploads.mkdir(exist_ok=True)
    target = uploads / f"{sha}.tar.gz"
    target.write_bytes(tar.read_bytes())
    return InstallPlan(layout=layout, version=version, token="t0k", tarball=str(target), sha256=sha,
                       meta={"version": version, "sha256": sha, "status": "staged"}, **kwargs)  # type: ignore[arg-type]


def test_install_then_activate_on_a_hostile_path(root: Path, tmp_path: Path) -> None:
    tar, sha = tarball(tmp_path / "a.tar.gz", {"VERSION": b"1.0.0\n", "bin/run": b"#!/bin/sh\n"})
    staged = root / ".tars-tmp" / "tpl"
    staged.mkdir(parents=True)
    (staged / "0").write_text("secret=1\n")
    plan = plan_for(root, "1.0.0", tar, sha, templates=[TemplateFile(str(staged / "0"), "config/app.conf", "0640")],
                    pre_install=["test -f VERSION && touch pre-ran; echo \"$(pwd)\" > where"],
                    post_install=["touch post-ran"], cleanup=[str(staged)])
    result = sh(install_command(plan), root)
    assert result.returncode == 0, result.stderr
    release = root / "releases" / "1.0.0"
    assert (release / "pre-ran").exists() and (release / "post-ran").exists()
    assert ".tmp-1.0.0-t0k" in (release / "where").read_text()  # pre_install ran in the temp dir
    assert (release / "config/app.conf").stat().st_mode & 0o777 == 0o640
    assert json.loads((release / ".tars/release.json").read_text())["sha256"] == sha
    assert not list((root / "releases").glob(".tmp-*")) and not staged.exists()
    layout = ReleaseLayout(str(root))
    result = sh(activate_command(layout, "1.0.0", "abc", stop="exit 0", start="touch started",
                                 meta={"version": "1.0.0", "sha256": sha, "status": "staged"}), root)
    assert result.returncode == 0, result.stderr
    assert (root / "current").readlink() == Path("releases/1.0.0") and (root / "started").exists()
    state = parse_state(sh(state_command(layout), root).stdout)
    assert state.current == "1.0.0" and [r.sha256 for r in state.releases] == [sha]
    assert not list(tmp_path.rglob("pwned*"))


def test_sha_mismatch_on_host_leaves_nothing(root: Path, tmp_path: Path) -> None:
    tar, _ = tarball(tmp_path / "a.tar.gz", {"VERSION": b"1\n"})
    result = sh(install_command(plan_for(root, "1.0.0", tar, "0" * 64)), root)
    assert result.returncode == EXIT_SHA_MISMATCH and "sha256 mismatch" in result.stderr
    assert not (root / "releases" / "1.0.0").exists()


def test_host_side_archive_check_refuses_escaping_links(root: Path, tmp_path: Path) -> None:
    tar, sha = tarball(tmp_path / "a.tar.gz", {"VERSION": b"1\n"}, {"etc": "../../../etc"})
    plan = plan_for(root, "1.0.0", tar, sha, check_on_host=True)
    result = sh(install_command(plan), root)
    assert result.returncode == EXIT_UNSAFE and "refusing unsafe archive: 'etc' -> '../../../etc'" in result.stderr
    assert not (root / "releases" / "1.0.0").exists() and not list((root / "releases").iterdir())
    assert not Path(plan.tarball).exists()  # the refused tarball is gone from the host


@pytest.mark.parametrize("check_on_host", [False, True])
def test_not_enough_free_space_is_refused_before_unpacking(root: Path, tmp_path: Path, check_on_host: bool) -> None:
    tar, sha = tarball(tmp_path / "a.tar.gz", {"VERSION": b"1\n"})
    staged = root / ".tars-tmp" / "tpl-t0k"
    staged.mkdir(parents=True)
    (staged / "0").write_text("password=hunter2\n")
    plan = plan_for(root, "1.0.0", tar, sha, check_on_host=check_on_host, unpacked_bytes=2,
                    limits=ArchiveLimits(min_free_mb=1 << 40), cleanup=[str(staged)],  # a tebibyte of mebibytes
                    templates=[TemplateFile(str(staged / "0"), "config/app.conf", "0600")])
    result = sh(install_command(plan), root)
    assert result.returncode == EXIT_NO_SPACE, result.stderr
    assert f"not enough free space under {root}" in result.stderr and "KiB available" in result.stderr
    assert not list((root / "releases").iterdir()) and not list((root / ".tars-tmp").iterdir())


def test_special_bits_are_stripped_and_artifact_metadata_dropped(root: Path, tmp_path: Path) -> None:
    """Even an archive that skipped the check (push trusts the controller's) cannot keep a setuid
    file or ship Tars's metadata."""
    forged = json.dumps({"version": "1.0.0", "status": "good"}).encode()
    tar, sha = tarball(tmp_path / "a.tar.gz", {"bin/su": b"#!/bin/sh\n", "tmp/x": b"", ".tars/release.json": forged},
                       {"bin/alias": "su"}, modes={"bin/su": 0o6755})
    assert sh(install_command(plan_for(root, "1.0.0", tar, sha)), root).returncode == 0
    release = root / "releases" / "1.0.0"
    assert (release / "bin/su").stat().st_mode & 0o7777 == 0o755
    assert (release / "bin/alias").is_symlink()
    assert json.loads((release / ".tars/release.json").read_text())["status"] == "staged"


def test_a_template_dest_through_a_link_out_is_refused(root: Path, tmp_path: Path) -> None:
    """Defense in depth: should an escaping link get past the archive check, no template is
    written through it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    tar, sha = tarball(tmp_path / "a.tar.gz", {"VERSION": b"1\n"}, {"conf": str(outside)})
    staged = root / ".tars-tmp" / "tpl"
    staged.mkdir(parents=True)
    (staged / "0").write_text("x\n")
    plan = plan_for(root, "1.0.0", tar, sha, templates=[TemplateFile(str(staged / "0"), "conf/sub/app.json", "0640")])
    result = sh(install_command(plan), root)
    assert result.returncode == EXIT_UNSAFE
    assert "template dest conf/sub/app.json:" in result.stderr and "not a directory inside the release" in result.stderr
    assert not list(outside.iterdir()) and not (root / "releases" / "1.0.0").exists()


def test_never_replaces_the_current_release(root: Path, tmp_path: Path) -> None:
    tar, sha = tarball(tmp_path / "a.tar.gz", {"VERSION": b"1\n"})
    (root / "releases" / "1.0.0").mkdir(parents=True)
    (root / "current").symlink_to("releases/1.0.0")
    result = sh(install_command(plan_for(root, "1.0.0", tar, sha)), root)
    assert result.returncode == EXIT_IS_CURRENT and "current release" in result.stderr
    assert not (root / "releases" / "1.0.0" / "VERSION").exists()


def test_failing_pre_install_is_named_and_publishes_nothing(root: Path, tmp_path: Path) -> None:
    tar, sha = tarball(tmp_path / "a.tar.gz", {"VERSION": b"1\n"})
    result = sh(install_command(plan_for(root, "1.0.0", tar, sha, pre_install=["true", "echo boom >&2; exit 7"])), root)
    assert result.returncode == 7 and "pre_install #2 failed (exit 7)" in result.stderr and "boom" in result.stderr
    assert not (root / "releases" / "1.0.0").exists()


def test_prune_never_removes_current(root: Path) -> None:
    for v in ("1.0.0", "2.0.0"):
        (root / "releases" / v).mkdir(parents=True)
    (root / "current").symlink_to("releases/2.0.0")
    sh(remove_releases_command(ReleaseLayout(str(root)), ["1.0.0", "2.0.0"], "x"), root)
    assert sorted(p.name for p in (root / "releases").iterdir()) == ["2.0.0"]


def test_state_of_a_missing_root(tmp_path: Path) -> None:
    state = parse_state(sh(state_command(ReleaseLayout(str(tmp_path / "nope"))), tmp_path).stdout)
    assert state.current is None and not state.deploy_root_exists
