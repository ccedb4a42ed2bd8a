"""The archive check, on the controller and as shipped to hosts: crafted archives refused with
the member named, ordinary ones accepted."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from tars_operators.config.schema import ArchiveLimits
from tars_operators.errors import UnsafeArchive
from tars_operators.remote.archive import check_archive, host_check_script, scan_archive

pytestmark = pytest.mark.unit
TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
         "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
         "fifo": tarfile.FIFOTYPE}


def m(name: str, kind: str = "file", link: str = "", *, size: int = 1, mode: int = 0o644) -> dict[str, Any]:
    return {"name": name, "kind": kind, "link": link, "size": size, "mode": mode}


def tar_bytes(members: list[dict[str, Any]]) -> bytes:
    """An uncompressed tar (GNU format) of ``members``; files are zero-filled."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for spec in members:
            info = tarfile.TarInfo(spec["name"])
            info.type, info.linkname, info.mode = TYPES[spec["kind"]], spec["link"], spec["mode"]
            size = spec["size"] if spec["kind"] == "file" else 0
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(size)) if size else None)
    return buf.getvalue()


def make_tar(path: Path, members: list[dict[str, Any]]) -> Path:
    import gzip

    path.write_bytes(gzip.compress(tar_bytes(members)))
    return path


def on_host(path: Path, limits: ArchiveLimits) -> subprocess.CompletedProcess[str]:
    """The check as shipped to a host for pull delivery (``python3 -c <script> <tarball> <limits>``)."""
    return subprocess.run(["python3", "-c", host_check_script(), str(path), json.dumps(limits.model_dump())],
                          capture_output=True, text=True, timeout=120)


SAFE = [m("./", "dir"), m("VERSION"), m("bin", "dir"), m("bin/run", mode=0o755),
        m("bin/alias", "symlink", "run"), m("lib", "symlink", "bin/../bin"),
        m("lib2", "symlink", "lib/run"), m("s/t/u/v/up", "symlink", "../../../../bin"),
        m("s/t/here", "symlink", "."), m("self", "symlink", "."), m("./dot"),
        m("cfg/app.json"), m("cfg/app.json"), m("later", "symlink", "not-yet/there")]

CHAIN = [m("a/b/c/d", "dir"), m("a/b/c/d/l", "symlink", "../../../.."),
         m("x", "symlink", "a/b/c/d/l/../../../../.."), m("conf", "symlink", "x/etc")]

# case → (members appended to SAFE, member the message must name, limits)
UNSAFE: dict[str, tuple[list[dict[str, Any]], str, dict[str, Any]]] = {
    "dotdot": ([m("../evil")], "'../evil'", {}),
    "nested dotdot": ([m("a/../../evil")], "'a/../../evil'", {}),
    "absolute": ([m("/etc/cron.d/evil")], "'/etc/cron.d/evil'", {}),
    "symlink absolute": ([m("etc", "symlink", "/etc")], "'etc' -> '/etc'", {}),
    "symlink escapes": ([m("a/b", "symlink", "../../x")], "'a/b' -> '../../x'", {}),
    "three-link chain (issue 12)": (CHAIN, "'x' -> 'a/b/c/d/l/../../../../..'", {}),
    "write through the chain": (CHAIN + [m("conf/app.json")], "'conf/app.json': its path passes through", {}),
    "write through a link inside": ([m("d", "dir"), m("ln", "symlink", "d"), m("ln/f")],
                                    "'ln/f': its path passes through the symlink 'ln'", {}),
    "link through a link escapes": ([m("up", "symlink", ".."), m("y", "symlink", "bin/../up/z")], "'up' -> '..'", {}),
    "link made unsafe by a later link": ([m("k", "symlink", "dd/.."), m("dd", "symlink", ".")],
                                         "'k' -> 'dd/..': symlink leaves", {}),
    "loop": ([m("p", "symlink", "q"), m("q", "symlink", "p")], "'q' -> 'p': symlink is a link loop", {}),
    "link replaces a file": ([m("VERSION", "symlink", "bin/run")], "'VERSION': replaces an earlier member", {}),
    "file replaces a link": ([m("bin/alias")], "'bin/alias': replaces an earlier member", {}),
    "hard link inside": ([m("copy", "hardlink", "bin/run")], "'copy': hard link to 'bin/run' not allowed", {}),
    "hard link escapes": ([m("h", "hardlink", "../outside")], "'h'", {}),
    "hard link absolute": ([m("h", "hardlink", "/etc/shadow")], "'h'", {}),
    "character device": ([m("dev/null", "chr")], "'dev/null': character device not allowed", {}),
    "block device": ([m("sda", "blk")], "'sda': block device not allowed", {}),
    "fifo": ([m("pipe", "fifo")], "'pipe': FIFO not allowed", {}),
    "metadata": ([m(".tars/release.json")], "'.tars/release.json': under .tars/", {}),
    "dotted metadata": ([m("./.tars/release.json")], "'./.tars/release.json': under .tars/", {}),
    "metadata dir": ([m(".tars", "dir")], "'.tars': under .tars/", {}),
    "metadata link": ([m(".tars", "symlink", "bin")], "'.tars': under .tars/", {}),
    "setuid refused": ([m("bin/su", mode=0o4755)], "'bin/su': setuid/setgid/sticky bits (mode 4755)",
                       {"special_bits": "refuse"}),
    "sticky dir refused": ([m("tmp", "dir", mode=0o1777)], "'tmp': setuid/setgid/sticky", {"special_bits": "refuse"}),
    "too many members": ([m(f"f{i}") for i in range(20)], "member #11 ", {"max_members": 10}),
    "member too big": ([m("big", size=(1 << 20) + 1)], "'big': unpacks to 1.0 MiB, more than artifact.limits.max_member_mb (1)",
                       {"max_member_mb": 1}),
    "total too big": ([m(f"part{i}", size=400_000) for i in range(3)], "'part2': the archive unpacks to more than",
                      {"max_unpacked_mb": 1}),
}


def test_safe_archive_passes_on_controller_and_host(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "ok.tar.gz", SAFE)
    info = check_archive(path)
    assert info.members == len(SAFE) and info.unpacked_bytes == 5  # 1 byte each; the repeated file counts twice
    run = on_host(path, ArchiveLimits())
    assert run.returncode == 0 and run.stdout.strip() == "5", run.stderr


def test_a_real_tar_of_a_release_passes(tmp_path: Path) -> None:
    """What GNU tar writes (padding, end blocks) is not mistaken for trailing data."""
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin/run").write_text("#!/bin/sh\n")
    (src / "current-bin").symlink_to("bin")
    path = tmp_path / "real.tar.gz"
    subprocess.run(["tar", "-czf", str(path), "-C", str(src), "."], check=True)
    assert check_archive(path).members == 4


@pytest.mark.parametrize("case", list(UNSAFE))
def test_unsafe_archives_are_refused_on_controller_and_host(tmp_path: Path, case: str) -> None:
    extra, named, overrides = UNSAFE[case]
    limits = ArchiveLimits(**overrides)
    path = make_tar(tmp_path / "bad.tar.gz", SAFE + extra)
    with pytest.raises(UnsafeArchive, match="refusing unsafe archive") as err:
        check_archive(path, limits)
    assert named in str(err.value) and "nothing was unpacked" in str(err.value)
    # The same rules, as shipped to a host for pull delivery.
    run = on_host(path, limits)
    assert run.returncode == 66 and "refusing unsafe archive" in run.stderr and named in run.stderr
    assert run.stdout == ""


def test_setuid_passes_when_stripped_on_unpack(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "suid.tar.gz", SAFE + [m("bin/su", mode=0o6755)])
    assert check_archive(path, ArchiveLimits(special_bits="strip")).members == len(SAFE) + 1


def test_the_member_count_is_refused_without_reading_the_rest(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "many.tar.gz", [m(f"f{i}", size=0) for i in range(30_000)])
    problems, read, _ = scan_archive(str(path), ArchiveLimits(max_members=100).model_dump())
    assert read == 101 and problems == ["member #101 'f100': the archive has more than 100 members "
                                        "(artifact.limits.max_members); ship fewer files or raise the limit"]


def test_a_sparse_member_counts_at_its_real_size(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "holes", "wb") as handle:
        handle.truncate(3 << 30)  # 3 GiB of holes: a few hundred bytes once archived with -S
    path = tmp_path / "sparse.tar.gz"
    subprocess.run(["tar", "-czSf", str(path), "-C", str(src), "holes"], check=True)
    assert path.stat().st_size < 10_000
    started = time.monotonic()
    with pytest.raises(UnsafeArchive, match=r"'holes': unpacks to 3072.0 MiB, more than artifact.limits.max_member_mb \(2048\)"):
        check_archive(path)
    assert time.monotonic() - started < 5  # refused from the header, not by unpacking 3 GiB


@pytest.mark.parametrize("between", [b"\0" * 512, b"garbage!" * 64])
def test_members_hidden_after_an_unreadable_block_are_refused(tmp_path: Path, between: bytes) -> None:
    """GNU tar skips a bad header (or a lone zero block) and unpacks what follows; tarfile stops."""
    import gzip

    first = tar_bytes([m("VERSION")])[:1024]  # header + data block, no end-of-archive blocks
    hidden = tar_bytes([m("etc", "symlink", "/etc")])
    path = tmp_path / "hidden.tar.gz"
    path.write_bytes(gzip.compress(first + between + hidden))
    with pytest.raises(UnsafeArchive, match="data after the end of the archive"):
        check_archive(path)
    assert on_host(path, ArchiveLimits()).returncode == 66


def with_old_gnu_prefix(header_and_rest: bytes, prefix: bytes) -> bytes:
    """The first header's prefix field set: tarfile reads ``<prefix>/<name>``, GNU tar ``<name>``."""
    data = bytearray(header_and_rest)
    data[345:345 + len(prefix)] = prefix
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    return bytes(data)


def test_a_name_tar_reads_differently_is_refused(tmp_path: Path) -> None:
    """``evil -> ..`` looks like ``safe/evil -> ..`` (inside) to tarfile; GNU tar makes ``evil``."""
    import gzip

    data = with_old_gnu_prefix(tar_bytes([m("evil", "symlink", "..")]), b"safe")
    listed = subprocess.run(["tar", "-tf", "-"], input=data, capture_output=True, check=True).stdout
    assert listed == b"evil\n"  # what GNU tar would unpack
    path = tmp_path / "prefix.tar.gz"
    path.write_bytes(gzip.compress(data))
    with pytest.raises(UnsafeArchive, match="'safe/evil': its header has a name prefix outside the POSIX format"):
        check_archive(path)
    assert on_host(path, ArchiveLimits()).returncode == 66
    # The POSIX format's own prefix is read alike by both: accepted.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("d" * 90 + "/" + "f" * 90)  # > 100 characters: split into prefix/name
        tar.addfile(info)
    path.write_bytes(gzip.compress(buf.getvalue()))
    assert check_archive(path).members == 1


@pytest.mark.parametrize("global_keys", [{"comment": "0123abcd"}, {"path": "evil"}, {"linkpath": "/etc"}])
def test_a_global_pax_header_may_only_carry_a_comment_or_times(tmp_path: Path, global_keys: dict[str, str]) -> None:
    """``git archive`` writes a comment (the commit); a global path or linkpath is applied to
    other members by tar than by tarfile."""
    import gzip

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers=global_keys) as tar:
        tar.addfile(tarfile.TarInfo("VERSION"))
    path = tmp_path / "pax.tar.gz"
    path.write_bytes(gzip.compress(buf.getvalue()))
    if "comment" in global_keys:
        assert check_archive(path).members == 1
    else:
        with pytest.raises(UnsafeArchive, match=f"follows a global pax header setting {next(iter(global_keys))}"):
            check_archive(path)


def test_garbage_is_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "junk.tar.gz"
    path.write_bytes(b"not a tarball")
    with pytest.raises(UnsafeArchive, match="not a readable .tar.gz archive"):
        check_archive(path)


def test_the_shipped_script_needs_nothing_from_tars(tmp_path: Path) -> None:
    """No module globals leak into the shipped source: it runs in an isolated interpreter and
    parses as Python 3.8."""
    script = host_check_script()
    assert "tars_operators" not in script
    ast.parse(script, feature_version=(3, 8))  # hosts need python3 >= 3.8 only
    path = make_tar(tmp_path / "ok.tar.gz", SAFE)
    run = subprocess.run([sys.executable, "-I", "-c", script, str(path), json.dumps(ArchiveLimits().model_dump())],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
