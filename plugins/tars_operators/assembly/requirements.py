"""Host requirements (``runtime.requires``): one shell script per host, parsed into verdicts.

Pure: :func:`check_script` builds the script (every value quoted), :func:`judge` reads its
output. The host only reports what it finds (a path's type, a command's version output, free
KB, its clock); the controller decides against what the config expects, so one rule judges
preflight, the chain's re-check and the assemble DAG. Every output line carries a random
per-call token, so nothing a check prints (a version banner) can forge another check's line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tars_operators.config.runtime import (
    ClockRequirement, CommandRequirement, FreeDiskRequirement, GroupRequirement, PathRequirement,
    PortRequirement, Requirement, Runtime, UserRequirement, WritableRequirement,
)
from tars_operators.config.spec import AppSpec, Host
from tars_operators.config.templating import host_context, render
from tars_operators.errors import InvalidValue
from tars_operators.remote.commands import q
from tars_operators.remote.layout import rand_token
from tars_operators.remote.validate import validate_remote_path

FOUND_MAX = 300  # characters of a check's output kept
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)+")
_OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b,
        "!=": lambda a, b: a != b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}


@dataclass(frozen=True)
class Verdict:
    """One requirement on one host: what was expected, what the host has, and whether it does."""

    requirement: str
    ok: bool
    found: str
    expected: str

    def as_dict(self) -> dict[str, Any]:
        return {"requirement": self.requirement, "ok": self.ok, "found": self.found,
                "expected": self.expected}


@dataclass(frozen=True)
class Readiness:
    """A host's requirements as checked now; ``error``: the host could not be checked."""

    host: str
    verdicts: tuple[Verdict, ...] = ()
    error: str = ""

    @property
    def ready(self) -> bool:
        return not self.error and all(v.ok for v in self.verdicts)

    @property
    def missing(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if not v.ok)

    def describe(self) -> str:
        if self.error:
            return f"not checked ({self.error})"
        if self.ready:
            return f"ready ({len(self.verdicts)} requirement(s))"
        return "; ".join(f"{v.requirement}: found {v.found}, expected {v.expected}"
                         for v in self.missing)

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "ready": self.ready, "error": self.error,
                "checks": [v.as_dict() for v in self.verdicts]}


def runtime_for(spec: AppSpec, host: Host) -> Runtime:
    """The app's ``runtime`` with the fields the host's group sets replaced by the group's."""
    base = spec.config.runtime
    group = spec.config.hosts.groups.get(host.group) if host.group else None
    if group is None or group.runtime is None:
        return base
    over = group.runtime
    return base.model_copy(update={k: getattr(over, k) for k in over.model_fields_set})


def label(req: Requirement, rendered: dict[str, str] | None = None) -> str:
    """The name a person reads in a table: ``python3 >= 3.11``, ``free disk >= 200 MB``…
    (with the host's rendered values when given)."""
    r = rendered or {}
    if req.name:
        return req.name
    if isinstance(req, CommandRequirement):
        cmd = r.get("command", req.command)
        return f"{cmd} {req.version.strip()}" if req.version else f"command {cmd}"
    if isinstance(req, PathRequirement):
        return f"{req.type if req.type != 'any' else 'path'} {r.get('path', req.path)}"
    if isinstance(req, UserRequirement):
        return f"user {req.user}"
    if isinstance(req, GroupRequirement):
        return f"group {req.group}"
    if isinstance(req, PortRequirement):
        return f"free port {r.get('port', req.port)}"
    if isinstance(req, FreeDiskRequirement):
        return (f"free disk >= {req.mb:g} MB" if req.mb is not None
                else f"free disk >= {req.artifact_times:g}x artifact")
    if isinstance(req, WritableRequirement):
        return "writable deploy root"
    return f"clock skew < {req.max_skew_seconds:g}s"


@dataclass(frozen=True)
class HostChecks:
    """The rendered requirements of one host and the script that checks them."""

    host: str
    requirements: tuple[Requirement, ...]
    rendered: tuple[dict[str, str], ...]  # per requirement: its rendered fields
    deploy_root: str
    token: str
    script: str


def host_checks(spec: AppSpec, host: Host, *, cheap_only: bool = False,
                write_probe: bool = True) -> HostChecks:
    """Render ``host``'s requirements and build the one command that checks them all
    (``write_probe=False``: ``writable`` asks ``test -w`` instead of creating a file)."""
    reqs = tuple(r for r in runtime_for(spec, host).requires
                 if not (cheap_only and isinstance(r, ClockRequirement)))
    ctx = host_context(spec, host, None)
    root = validate_remote_path(ctx["deploy_root"], "deploy_root")
    rendered = tuple(_render(r, ctx, host) for r in reqs)
    token = rand_token(6)
    return HostChecks(host.name, reqs, rendered, root, token,
                      check_script(reqs, rendered, root, token, write_probe=write_probe))


def _render(req: Requirement, ctx: dict[str, Any], host: Host) -> dict[str, str]:
    what = f"{host.name}: preflight: {label(req)}"
    try:
        if isinstance(req, CommandRequirement):
            cmd = render(req.command, ctx).strip()
            if not cmd or any(c.isspace() for c in cmd):
                raise InvalidValue(f"{what}: expected a command name or path, got '{cmd}'")
            ver = render(req.version_command, ctx) if req.version_command else f"{q(cmd)} --version"
            return {"command": cmd, "version_command": ver}
        if isinstance(req, PathRequirement):
            return {"path": validate_remote_path(render(req.path, ctx), "path")}
        if isinstance(req, PortRequirement):
            port = render(str(req.port), ctx).strip()
            if not port.isdigit() or not 1 <= int(port) <= 65535:
                raise InvalidValue(f"{what}: expected a TCP port 1-65535, got '{port}'")
            return {"port": str(int(port)), "address": _proc_address(render(req.address, ctx))}
    except InvalidValue:
        raise
    except Exception as exc:  # jinja2 errors come in many types
        raise InvalidValue(f"{what}: cannot render: {exc}") from None
    return {}


def _proc_address(text: str) -> str:
    """An IPv4 address as /proc/net/tcp shows it (little-endian hex); "" for anything else."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return ""
    return ip.packed[::-1].hex().upper() if ip.version == 4 else ""


def check_script(reqs: Sequence[Requirement], rendered: Sequence[dict[str, str]], root: str,
                 token: str, *, write_probe: bool = True) -> str:
    """``sh`` script: one line ``<token> <index> <found>`` per requirement, nothing else judged."""
    lines = [f"T={q(token)}; R={q(root)}",
             # say INDEX TEXT: one line, printable, bounded (a banner cannot add lines)
             f"say() {{ i=$1; shift; printf '%s %s %s\\n' \"$T\" \"$i\" \"$(printf '%s' \"$*\" "
             f"| tr -c '[:print:]' ' ' | head -c {FOUND_MAX})\"; }}",
             "near() { d=$1; while [ ! -d \"$d\" ]; do d=$(dirname \"$d\"); done; printf '%s' \"$d\"; }"]
    for i, (req, r) in enumerate(zip(reqs, rendered)):
        lines.append(_snippet(i, req, r, write_probe))
    return "\n".join(lines) + "\n"


def _snippet(i: int, req: Requirement, r: dict[str, str], write_probe: bool = True) -> str:
    if isinstance(req, CommandRequirement):
        c = q(r["command"])
        version = (f"say {i} \"found $p $( ( sh -c {q(r['version_command'])} ) 2>&1 </dev/null "
                   f"| head -c 400)\"" if req.version else f"say {i} \"found $p\"")
        return f"if p=$(command -v {c} 2>/dev/null); then {version}; else say {i} missing; fi"
    if isinstance(req, PathRequirement):
        p = q(r["path"])
        return (f"if [ -d {p} ]; then say {i} dir; elif [ -f {p} ]; then say {i} file; "
                f"elif [ -e {p} ]; then say {i} other; else say {i} missing; fi")
    if isinstance(req, UserRequirement):
        return f"if u=$(id -u -- {q(req.user)} 2>/dev/null); then say {i} uid $u; else say {i} missing; fi"
    if isinstance(req, GroupRequirement):
        g = q(req.group)
        return (f"if getent group {g} >/dev/null 2>&1 || awk -F: -v g={g} '$1==g{{f=1}} "
                f"END{{exit !f}}' /etc/group 2>/dev/null; then say {i} present; "
                f"else say {i} missing; fi")
    if isinstance(req, PortRequirement):
        port = int(r["port"])
        # /proc/net/tcp{,6}: field 2 is ADDR:PORT in hex, field 4 the state (0A = LISTEN); a
        # listener on the wildcard address (all zeros) takes the port on every address.
        own = r["address"]
        match = (f"(a==\"{own}\" || a ~ /^0+$/)" if own else "1")
        return (f"if [ -e \"$R/current\" ] || [ -L \"$R/current\" ]; then say {i} installed; "
                f"elif cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk "
                f"'$4==\"0A\" {{ split($2, x, \":\"); a=x[1]; if (x[2]==\"{port:04X}\" && "
                f"{match}) f=1 }} END{{exit !f}}'; then say {i} listening; else say {i} free; fi")
    if isinstance(req, FreeDiskRequirement):
        return (f"say {i} kb $(df -Pk \"$(near \"$R\")\" 2>/dev/null | awk 'NR==2{{print $4}}') "
                f"on \"$(near \"$R\")\"")
    if isinstance(req, WritableRequirement):
        probe = ("t=$(mktemp \"$R/.tars-probe.XXXXXX\" 2>/dev/null) && rm -f \"$t\"" if write_probe
                 else "[ -w \"$R\" ]")  # a dry run creates nothing, not even a probe file
        return (f"if [ ! -d \"$R\" ]; then say {i} missing; elif {probe}; then say {i} writable; "
                f"else say {i} read-only; fi")
    return f"say {i} clock $(date +%s.%N 2>/dev/null || date +%s)"


def judge(checks: HostChecks, output: str, *, controller_time: float,
          artifact_bytes: int | None = None) -> Readiness:
    """The host's verdicts from the script's output (a missing line: not answered)."""
    found: dict[int, str] = {}
    for line in output.splitlines():
        head, _, rest = line.partition(" ")
        if head != checks.token:
            continue
        index, _, text = rest.partition(" ")
        if index.isdigit():
            found.setdefault(int(index), text.strip())
    verdicts = []
    for i, (req, r) in enumerate(zip(checks.requirements, checks.rendered)):
        answer = found.get(i)
        if answer is None:
            verdicts.append(Verdict(label(req, r), False, "no answer",
                                    _expected(req, r, artifact_bytes)))
            continue
        ok, shown = _decide(req, r, answer, controller_time, artifact_bytes)
        verdicts.append(Verdict(label(req, r), ok, shown, _expected(req, r, artifact_bytes)))
    return Readiness(checks.host, tuple(verdicts))


def _expected(req: Requirement, r: dict[str, str], artifact_bytes: int | None) -> str:
    if isinstance(req, CommandRequirement):
        return f"{r['command']} {req.version.strip()}" if req.version else f"{r['command']} on PATH"
    if isinstance(req, PathRequirement):
        return f"{req.type if req.type != 'any' else 'a file or dir'} at {r['path']}"
    if isinstance(req, (UserRequirement, GroupRequirement)):
        return "present"
    if isinstance(req, PortRequirement):
        return f"nothing listening on TCP {r['port']} before the first start"
    if isinstance(req, FreeDiskRequirement):
        need = _need_mb(req, artifact_bytes)
        return f">= {need:g} MB free" if need is not None else f"{req.artifact_times:g}x artifact"
    if isinstance(req, WritableRequirement):
        return "deploy root present and writable"
    return f"skew < {req.max_skew_seconds:g}s"


def _need_mb(req: FreeDiskRequirement, artifact_bytes: int | None) -> float | None:
    if req.mb is not None:
        return req.mb
    if artifact_bytes is None or req.artifact_times is None:
        return None
    return round(req.artifact_times * artifact_bytes / (1 << 20), 1)


def _decide(req: Requirement, r: dict[str, str], text: str, now: float,
            artifact_bytes: int | None) -> tuple[bool, str]:
    if isinstance(req, CommandRequirement):
        if text == "missing":
            return False, "not found"
        if not req.version:
            return True, text.removeprefix("found ")
        return _version_ok(req.version, text.removeprefix("found "))
    if isinstance(req, PathRequirement):
        return (text == req.type if req.type != "any" else text in ("dir", "file", "other")), text
    if isinstance(req, (UserRequirement, GroupRequirement)):
        return text != "missing", text
    if isinstance(req, PortRequirement):
        if text == "installed":
            return True, "not checked (a release is installed: the app holds its port)"
        return text == "free", text
    if isinstance(req, FreeDiskRequirement):
        m = re.match(r"kb ([0-9]+) on (.*)$", text)
        if not m:
            return False, f"unreadable df output: {text}"
        mb = int(m.group(1)) / 1024
        need = _need_mb(req, artifact_bytes)
        shown = f"{mb:.0f} MB free on {m.group(2)}"
        if need is None:
            return True, shown + " (artifact size unknown: stage checks space itself)"
        return mb >= need, shown
    if isinstance(req, WritableRequirement):
        return text == "writable", text
    m = re.match(r"clock ([0-9]+(?:\.[0-9]+)?)", text)
    if not m:
        return False, f"unreadable clock: {text}"
    skew = abs(float(m.group(1)) - now)
    return skew < req.max_skew_seconds, f"skew {skew:.1f}s"


def _version_ok(constraint: str, output: str) -> tuple[bool, str]:
    m = re.match(r"^\s*(>=|<=|==|!=|>|<)\s*([0-9.]+)\s*$", constraint)
    number = _NUMBER.search(output.split(" ", 1)[1] if " " in output else output)
    path = output.split(" ", 1)[0]
    if not m or not number:
        return False, f"{path}, version unreadable"
    have, want = _as_tuple(number.group(0)), _as_tuple(m.group(2))
    width = max(len(have), len(want))
    have, want = have + (0,) * (width - len(have)), want + (0,) * (width - len(want))
    return _OPS[m.group(1)](have, want), f"{number.group(0)} ({path})"


def _as_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))
