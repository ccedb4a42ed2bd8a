from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tars_operators.errors import UnsafeArchive
from tars_operators.remote.archive import check_archive, host_check_script

pytestmark = pytest.mark.unit


def make_tar(path: Path, members: list[tuple[str, str, str]]) -> Path:
    """members: (name, kind, linkname) with kind file|dir|symlink|hardlink|chr|fifo."""
    types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
             "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = types[kind], link
            data = b"x" if kind == "file" else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


SAFE = [("VERSION", "file", ""), ("bin", "dir", ""), ("bin/run", "file", ""),
        ("bin/alias", "symlink", "run"), ("lib", "symlink", "bin/../bin"),
        ("copy", "hardlink", "bin/run"), ("./dot", "file", "")]

UNSAFE = {
    "dotdot": ("../evil", "file", ""),
    "nested dotdot": ("a/../../evil", "file", ""),
    "absolute": ("/etc/cron.d/evil", "file", ""),
    "symlink absolute": ("etc", "symlink", "/etc"),
    "symlink escapes": ("a/b", "symlink", "../../x"),
    "hardlink escapes": ("h", "hardlink", "../outside"),
    "hardlink absolute": ("h", "hardlink", "/etc/shadow"),
    "device": ("dev/null", "chr", ""),
    "fifo": ("pipe", "fifo", ""),
}


def test_safe_archive_passes(tmp_path: Path) -> None:
    info = check_archive(make_tar(tmp_path / "ok.tar.gz", SAFE))
    assert info.members == len(SAFE)


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_archives_are_refused_on_controller_and_host(tmp_path: Path, case: str) -> None:
    path = make_tar(tmp_path / "bad.tar.gz", SAFE + [UNSAFE[case]])
    with pytest.raises(UnsafeArchive, match="refusing unsafe archive") as err:
        check_archive(path)
    assert UNSAFE[case][0] in str(err.value)
    # The same rules, as shipped to a host for pull delivery.
    run = subprocess.run([sys.executable, "-c", host_check_script(), str(path)],
                         capture_output=True, text=True)
    assert run.returncode == 66 and "refusing unsafe archive" in run.stderr


def test_host_script_accepts_safe_archive(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "ok.tar.gz", SAFE)
    run = subprocess.run(["python3", "-c", host_check_script(), str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_garbage_is_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "junk.tar.gz"
    path.write_bytes(b"not a tarball")
    with pytest.raises(UnsafeArchive, match="not a readable tar archive"):
        check_archive(path)
