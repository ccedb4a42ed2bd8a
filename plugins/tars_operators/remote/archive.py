"""Release archive safety: refuse anything that could write outside the release directory.

``member_problem`` is self-contained on purpose: its source is also shipped to hosts (pull
delivery) so the controller and the host apply exactly the same rules.
"""

from __future__ import annotations

import inspect
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tars_operators.errors import UnsafeArchive

MAX_PROBLEMS_SHOWN = 5


def member_problem(name: str, kind: str, linkname: str) -> str | None:
    """Why one tar member is unsafe, or None. kind: file, dir, symlink, hardlink, device, other."""
    import posixpath

    if not name or name.startswith("/"):
        return f"{name!r}: absolute path"
    if ".." in name.split("/"):
        return f"{name!r}: '..' in path"
    if kind in ("device", "other"):
        return f"{name!r}: {kind} file not allowed"
    if kind in ("symlink", "hardlink"):
        if not linkname or linkname.startswith("/"):
            return f"{name!r}: {kind} to absolute path {linkname!r}"
        base = posixpath.dirname(name) if kind == "symlink" else ""
        target = posixpath.normpath(posixpath.join(base, linkname))
        if target == ".." or target.startswith("../"):
            return f"{name!r}: {kind} to {linkname!r} escapes the release directory"
    return None


def member_kind(info: tarfile.TarInfo) -> str:
    """Classify a member for ``member_problem``."""
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    if info.ischr() or info.isblk():
        return "device"
    return "other"  # fifos, sparse/unknown types


@dataclass(frozen=True)
class ArchiveInfo:
    members: int
    unpacked_bytes: int


def check_members(members: list[tarfile.TarInfo], source: str) -> ArchiveInfo:
    """Raise UnsafeArchive listing the first unsafe members, else return a summary."""
    problems = [p for m in members if (p := member_problem(m.name, member_kind(m), m.linkname))]
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = f" (and {len(problems) - MAX_PROBLEMS_SHOWN} more)" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        raise UnsafeArchive(f"{source}: refusing unsafe archive: {shown}{more}")
    return ArchiveInfo(len(members), sum(m.size for m in members if m.isreg()))


def check_archive(path: Path) -> ArchiveInfo:
    """Check a .tar.gz on the controller before it is sent anywhere."""
    try:
        with tarfile.open(path, "r:*") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UnsafeArchive(f"{path}: not a readable tar archive: {exc}") from exc
    return check_members(members, str(path))


_HOST_DRIVER = '''
import sys, tarfile
kinds = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir",
         tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "device",
         tarfile.BLKTYPE: "device", tarfile.CONTTYPE: "file"}
try:
    with tarfile.open(sys.argv[1], "r:*") as tar:
        bad = [p for m in tar.getmembers()
               if (p := member_problem(m.name, kinds.get(m.type, "other"), m.linkname))]
except Exception as exc:
    sys.stderr.write("tars: not a readable tar archive: %s\\n" % exc)
    sys.exit(66)
if bad:
    sys.stderr.write("tars: refusing unsafe archive: %s\\n" % "; ".join(bad[:5]))
    sys.exit(66)
'''


def host_check_script() -> str:
    """Python source checking ``sys.argv[1]`` with the same rules; exits 66 if unsafe."""
    return "from __future__ import annotations\n" + inspect.getsource(member_problem) + _HOST_DRIVER


def host_check_command(tarball: str) -> str:
    """Shell command running the archive check on the host (needs python3 >= 3.8)."""
    return f"python3 -c {shlex.quote(host_check_script())} {shlex.quote(tarball)}"
