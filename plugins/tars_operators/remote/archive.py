"""Release archive safety: an artifact is data, never authority.

``scan_archive`` reads a ``.tar.gz`` member by member the way tar would unpack it (a virtual
tree: links resolve through earlier links) and says what is unsafe. It is self-contained on
purpose: its source is also shipped to hosts (pull delivery), so the controller and the host
apply exactly the same rules — there is no second copy of them.
"""

from __future__ import annotations

import inspect
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tars_operators.config.schema import ArchiveLimits
from tars_operators.errors import UnsafeArchive


def scan_archive(path: str, limits: dict[str, Any]) -> tuple[list[str], int, int]:
    """Check a .tar.gz as tar would unpack it: (problems, members read, bytes unpacked).

    ``limits``: ``ArchiveLimits`` as a dict. Reading stops at the first limit crossed, so a
    huge archive is refused without reading it all. Own imports, no module globals: shipped.
    """
    import gzip
    import tarfile
    import zlib

    max_hops, trailing_cap, mib = 40, 64 << 20, float(1 << 20)
    max_member = int(limits["max_member_mb"] * mib)
    max_total = int(limits["max_unpacked_mb"] * mib)
    problems: list[str] = []
    tree: dict[str, Any] = {"": "dir"}  # what tar would have built so far: "dir", "file" or ("link", target)
    links: list[str] = []
    refused_links: set[str] = set()

    def resolve(base: list[str], target: str, hops: list[int]) -> tuple[list[str] | None, str]:
        """Where ``target`` leads from directory ``base``: (parts, ""), or (None, why unsafe)."""
        if target.startswith("/"):
            return None, "is an absolute link; use a relative link inside the release"
        parts = list(base)
        for comp in target.split("/"):
            if comp in ("", "."):
                continue
            if comp == "..":
                if not parts:
                    return None, "leaves the release directory (resolved through the archive's links)"
                parts.pop()
                continue
            parts.append(comp)
            node = tree.get("/".join(parts))
            if isinstance(node, tuple):
                hops[0] += 1
                if hops[0] > max_hops:
                    return None, f"is a link loop or a chain of more than {max_hops} links"
                resolved, why = resolve(parts[:-1], node[1], hops)
                if resolved is None:
                    return None, why
                parts = resolved
        return parts, ""

    class Tracked:
        """The decompressed stream, remembering the last block tarfile read (its end marker)."""

        def __init__(self, raw: Any) -> None:
            self.raw, self.last = raw, b""

        def read(self, size: int = -1) -> bytes:
            self.last = self.raw.read(size)
            return self.last

        def seek(self, pos: int, whence: int = 0) -> int:
            return int(self.raw.seek(pos, whence))

        def tell(self) -> int:
            return int(self.raw.tell())

    class Header(tarfile.TarInfo):
        """A header as tarfile reads it, flagged when GNU tar would read another name: tarfile
        prepends the ustar prefix field to the name in any header, GNU tar only under the POSIX
        magic (in old GNU headers those bytes are times and sparse maps)."""

        ambiguous = False

        @classmethod
        def frombuf(cls, buf: Any, encoding: str, errors: str) -> Any:
            obj = super().frombuf(buf, encoding, errors)
            obj.ambiguous = (bool(buf[345:500].strip(b"\0")) and buf[257:263] != b"ustar\0"
                             and obj.type not in tarfile.GNU_TYPES)
            return obj

    def check(info: Any) -> str | None:
        """Why one member is unsafe given the members before it; records it in the tree."""
        name, kinds = info.name, ("file", "dir", "symlink")
        if info.ambiguous:
            return (f"{name!r}: its header has a name prefix outside the POSIX format, which tar "
                    "reads as another name; rebuild the archive with a standard tar")
        kind = ("file" if info.isreg() else "dir" if info.isdir() else "symlink" if info.issym()
                else "hard link" if info.islnk() else "character device" if info.ischr()
                else "block device" if info.isblk() else "FIFO" if info.isfifo() else f"type {info.type!r}")
        if name.startswith("/"):
            return f"{name!r}: absolute path; build the archive with relative paths"
        if ".." in name.split("/"):
            return f"{name!r}: '..' in the path; build the archive from inside the release directory"
        parts = [c for c in name.split("/") if c not in ("", ".")]
        key = "/".join(parts)
        if parts and parts[0] == ".tars":
            return f"{name!r}: under .tars/, which only Tars writes; remove it from the artifact"
        if kind not in kinds:
            extra = f" to {info.linkname!r}" if kind == "hard link" else ""
            return f"{name!r}: {kind}{extra} not allowed; ship regular files, directories and relative symlinks"
        if not parts:
            return None if kind == "dir" else f"{name!r}: a {kind} named like the release directory itself"
        for i in range(1, len(parts)):
            if isinstance(tree.get("/".join(parts[:i])), tuple):
                return (f"{name!r}: its path passes through the symlink {'/'.join(parts[:i])!r}, so tar "
                        "would write through it; ship a real directory")
        prev = tree.get(key)
        if prev is not None and (kind == "symlink" or isinstance(prev, tuple) or prev != kind):
            return f"{name!r}: replaces an earlier member of the same name; ship each path once"
        if kind != "symlink" and info.mode & 0o7000 and limits["special_bits"] == "refuse":
            return (f"{name!r}: setuid/setgid/sticky bits (mode {info.mode & 0o7777:o}) and "
                    "artifact.limits.special_bits is refuse; clear them in the artifact or set it to strip")
        for i in range(1, len(parts)):
            tree.setdefault("/".join(parts[:i]), "dir")
        if kind == "symlink":
            tree[key] = ("link", info.linkname)
            links.append(key)
            why = resolve(parts[:-1], info.linkname, [0])[1] if info.linkname else "has an empty target"
            if why:
                refused_links.add(key)
            return f"{name!r} -> {info.linkname!r}: symlink {why}" if why else None
        tree[key] = kind
        return None

    count = total = 0
    try:
        with gzip.open(path, "rb") as raw:
            stream: Any = Tracked(raw)
            with tarfile.open(fileobj=stream, mode="r:", tarinfo=Header) as tar:
                for info in tar:
                    count += 1
                    if count > limits["max_members"]:
                        problems.append(f"member #{count} {info.name!r}: the archive has more than "
                                        f"{limits['max_members']} members (artifact.limits.max_members); "
                                        "ship fewer files or raise the limit")
                        return problems, count, total
                    # tar and tarfile apply a global pax header's keys to different members.
                    odd = sorted(set(tar.pax_headers) - {"comment", "mtime", "atime", "ctime"})
                    problem = (f"{info.name!r}: follows a global pax header setting {', '.join(odd)}, "
                               "which tar and this check apply differently; rebuild the archive without it"
                               if odd else check(info))
                    if problem:
                        problems.append(problem)
                    if info.isreg():
                        total += info.size  # sparse members: tarfile gives their real size
                        if info.size > max_member:
                            problems.append(f"{info.name!r}: unpacks to {info.size / mib:.1f} MiB, more than "
                                            f"artifact.limits.max_member_mb ({limits['max_member_mb']:g})")
                            return problems, count, total
                        if total > max_total:
                            problems.append(f"{info.name!r}: the archive unpacks to more than "
                                            f"artifact.limits.max_unpacked_mb ({limits['max_unpacked_mb']:g}) "
                                            "at this member")
                            return problems, count, total
                # tar skips an unreadable header and unpacks what follows; tarfile stops there.
                rest = stream.last + raw.read(trailing_cap)
                if rest.strip(b"\0") or raw.read(1):
                    problems.append("data after the end of the archive (an unreadable header?): tar could "
                                    "unpack members this check cannot see; rebuild the archive")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        problems.append(f"not a readable .tar.gz archive: {exc}")
        return problems, count, total
    for key in links:  # a later member may change where an earlier link leads
        why = "" if key in refused_links else resolve(key.split("/")[:-1], tree[key][1], [0])[1]
        if why:
            problems.append(f"{key!r} -> {tree[key][1]!r}: symlink {why}")
    return problems, count, total


def refusal(problems: list[str]) -> str:
    """One line naming the first problems (shipped with ``scan_archive``)."""
    shown = "; ".join(problems[:5])
    more = " (and %d more)" % (len(problems) - 5) if len(problems) > 5 else ""
    return "refusing unsafe archive: %s%s; nothing was unpacked" % (shown, more)


@dataclass(frozen=True)
class ArchiveInfo:
    members: int
    unpacked_bytes: int


def check_archive(path: Path, limits: ArchiveLimits | None = None) -> ArchiveInfo:
    """Check a .tar.gz on the controller before it is sent anywhere; raise UnsafeArchive."""
    problems, members, size = scan_archive(str(path), (limits or ArchiveLimits()).model_dump())
    if problems:
        raise UnsafeArchive(f"{path}: {refusal(problems)}")
    return ArchiveInfo(members, size)


_HOST_DRIVER = '''
import json, sys
problems, members, size = scan_archive(sys.argv[1], json.loads(sys.argv[2]))
if problems:
    sys.stderr.write("tars: %s\\n" % refusal(problems))
    sys.exit(66)
print(size)
'''


def host_check_script() -> str:
    """Python checking ``argv[1]`` with ``argv[2]`` (limits JSON): prints the unpacked bytes,
    or exits 66 naming the problems."""
    return ("from __future__ import annotations\nfrom typing import Any\n"
            + inspect.getsource(scan_archive) + inspect.getsource(refusal) + _HOST_DRIVER)


def host_check_command(tarball: str, limits: ArchiveLimits) -> str:
    """Shell command running the archive check on the host (needs python3 >= 3.8)."""
    return (f"python3 -c {shlex.quote(host_check_script())} {shlex.quote(tarball)} "
            f"{shlex.quote(json.dumps(limits.model_dump()))}")
