"""Assemble steps (``runtime.assemble``): idempotent, each reports ``changed`` or ``unchanged``.

Each step is one shell script built here (every value quoted) that checks first and acts only
when the check says so; with ``apply=False`` (a dry run) it only checks and reports what it
would change. The script's last marked line is ``<token> changed|unchanged|would <why>``.
Files are rendered on the controller (jinja2, the ``secrets`` rules of install templates) and
compared by sha256 on the host; only a differing file is uploaded (temporary name + rename).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tars_operators.assembly.requirements import runtime_for
from tars_operators.config.runtime import (
    AssembleStep, CommandStep, DirStep, FileStep, PackageManager, PackageStep,
)
from tars_operators.config.spec import AppSpec, Host
from tars_operators.config.templating import host_context, render
from tars_operators.errors import InvalidValue, RemoteError, TarsError
from tars_operators.remote.commands import q
from tars_operators.remote.layout import rand_token
from tars_operators.remote.validate import validate_remote_path

if TYPE_CHECKING:
    from tars_operators.hooks.ssh import HostSession

STEP = "assemble"


@dataclass(frozen=True)
class StepOutcome:
    """One assemble step on one host."""

    step: str  # its label: "dir /srv/demo", "file /etc/demo.env"…
    state: str  # changed | unchanged | would change | failed
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"step": self.step, "state": self.state, "detail": self.detail}


@dataclass
class HostAssembly:
    host: str
    steps: list[StepOutcome] = field(default_factory=list)
    error: str = ""

    @property
    def changed(self) -> bool:
        return any(s.state in ("changed", "would change") for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "error": self.error, "changed": self.changed,
                "steps": [s.as_dict() for s in self.steps]}


def step_label(step: AssembleStep) -> str:
    if step.name:
        return step.name
    if isinstance(step, DirStep):
        return f"dir {step.path}"
    if isinstance(step, PackageStep):
        return "packages " + " ".join(step.packages)
    if isinstance(step, FileStep):
        return f"file {step.dest}"
    return f"command {step.command.splitlines()[0][:60]}"


def _mode(text: str) -> str:
    """``0755`` → ``755`` (what ``stat -c %a`` prints)."""
    return text.lstrip("0").rjust(3, "0")


def _preamble(token: str, apply: bool) -> str:
    # result WORD [WHY]: the marked line the controller reads; act: run only when applying.
    return (f"T={q(token)}; A={1 if apply else 0}; W=\n"
            "act() { if [ \"$A\" = 1 ]; then \"$@\" || exit $?; fi; }\n"
            "why() { W=\"${W:+$W, }$*\"; }\n")


def _finish() -> str:
    return ("if [ -z \"$W\" ]; then echo \"$T unchanged\"; elif [ \"$A\" = 1 ]; then "
            "echo \"$T changed $W\"; else echo \"$T would $W\"; fi\n")


def _owner_lines(path: str, owner: str | None, group: str | None) -> str:
    out = ""
    if owner:
        out += (f"[ \"$(stat -c %U {path})\" = {q(owner)} ] || {{ why owner {q(owner)}; "
                f"act chown {q(owner)} {path}; }}\n")
    if group:
        out += (f"[ \"$(stat -c %G {path})\" = {q(group)} ] || {{ why group {q(group)}; "
                f"act chgrp {q(group)} {path}; }}\n")
    return out


def dir_script(path: str, mode: str, owner: str | None, group: str | None, token: str,
               apply: bool) -> str:
    p = q(validate_remote_path(path, "dir path"))
    m = _mode(mode)
    return (_preamble(token, apply)
            + f"[ -d {p} ] || {{ why created; act mkdir -p {p}; }}\n"
            + f"if [ -d {p} ]; then [ \"$(stat -c %a {p})\" = {q(m)} ] || {{ why mode {q(m)}; "
              f"act chmod {q(m)} {p}; }}\n"
            + _owner_lines(p, owner, group) + "fi\n"
            + _finish())


def file_check_script(dest: str, sha256: str, mode: str, owner: str | None, group: str | None,
                      token: str, apply: bool) -> str:
    """Compare; the content itself is uploaded by the caller when the marker says ``content``."""
    d = q(validate_remote_path(dest, "file dest"))
    m = _mode(mode)
    return (_preamble(token, apply)
            + f"if [ -f {d} ] && [ \"$(sha256sum < {d} | cut -c1-64)\" = {q(sha256)} ]; then :; "
              f"else echo \"$T content\"; why content; fi\n"
            + f"if [ -f {d} ]; then [ \"$(stat -c %a {d})\" = {q(m)} ] || {{ why mode {q(m)}; "
              f"act chmod {q(m)} {d}; }}\n"
            + _owner_lines(d, owner, group) + "fi\n"
            + _finish())


def file_attrs_script(dest: str, mode: str, owner: str | None, group: str | None) -> str:
    d = q(validate_remote_path(dest, "file dest"))
    out = f"chmod {q(_mode(mode))} {d}\n"
    out += f"chown {q(owner)} {d}\n" if owner else ""
    out += f"chgrp {q(group)} {d}\n" if group else ""
    return out


def command_script(command: str, creates: str | None, unless: str | None, token: str,
                   apply: bool) -> str:
    guard = []
    if creates is not None:
        guard.append(f"[ -e {q(validate_remote_path(creates, 'creates'))} ]")
    if unless is not None:
        guard.append(f"sh -c {q(unless)} >/dev/null 2>&1 </dev/null")
    return (_preamble(token, apply)
            + f"if {' || '.join(guard)}; then :; else why run; act sh -ec {q(command)} "
              f"</dev/null >&2; fi\n"
            + _finish())


def package_script(packages: tuple[str, ...], manager: PackageManager, token: str,
                   apply: bool) -> str:
    """Check each package; install the missing ones in one call (they reach the install
    template as the inner shell's ``"$@"``, never as text)."""
    lines = [_preamble(token, apply).rstrip("\n"), "set --"]
    for name in packages:
        check = render(manager.check, {"package": q(name), "packages": q(name)})
        lines.append(f"sh -c {q(check)} </dev/null >/dev/null 2>&1 || set -- \"$@\" {q(name)}")
    install = render(manager.install, {"packages": '"$@"', "package": '"$@"'})
    lines.append(f"if [ $# -gt 0 ]; then why install \"$*\"; act sh -ec {q(install)} sh \"$@\" "
                 f"</dev/null >&2; fi")
    return "\n".join(lines) + "\n" + _finish()


def parse(output: str, token: str) -> tuple[str, str]:
    """(state, detail) from a step's marked lines: the last ``changed``/``unchanged``/``would``."""
    state, detail = "", ""
    for line in output.splitlines():
        head, _, rest = line.partition(" ")
        if head != token:
            continue
        word, _, why = rest.partition(" ")
        if word == "unchanged":
            state, detail = "unchanged", ""
        elif word == "changed":
            state, detail = "changed", why
        elif word == "would":
            state, detail = "would change", why
    return state, detail


def _rendered(spec: AppSpec, host: Host, ctx: dict[str, Any], text: str, what: str) -> str:
    try:
        return render(text, ctx)
    except Exception as exc:  # jinja2 errors come in many types
        raise InvalidValue(f"{host.name}: {STEP}: {what}: cannot render: {exc}") from None


def render_file(spec: AppSpec, host: Host, ctx: dict[str, Any], step: FileStep) -> bytes:
    """The file's content, read with the ``secrets`` rules of install templates."""
    from tars_operators.config.secrets import template_source
    from tars_operators.steps.templates import render_install

    what = f"assemble file {step.src}"
    path = template_source(spec.source, step.src)
    try:
        source = path.read_text()
    except OSError as exc:
        raise InvalidValue(f"{host.name}: {STEP}: {what}: cannot read {path}: {exc.strerror}") from None
    return render_install(spec, host, ctx, source, what)[0].encode()


def run_step(session: HostSession, spec: AppSpec, host: Host, step: AssembleStep,
             ctx: dict[str, Any], *, apply: bool) -> StepOutcome:
    """Check one step and, when applying and needed, do it."""
    name = step_label(step)
    token = rand_token(6)

    def r(text: str, what: str) -> str:
        return _rendered(spec, host, ctx, text, what)

    upload: bytes | None = None
    dest = ""
    if isinstance(step, DirStep):
        script = dir_script(r(step.path, "path"), step.mode, step.owner, step.group, token, apply)
    elif isinstance(step, PackageStep):
        script = package_script(step.packages, runtime_for(spec, host).packages, token, apply)
    elif isinstance(step, FileStep):
        upload = render_file(spec, host, ctx, step)
        dest = r(step.dest, "dest")
        script = file_check_script(dest, hashlib.sha256(upload).hexdigest(), step.mode,
                                   step.owner, step.group, token, apply)
    else:
        assert isinstance(step, CommandStep)
        script = command_script(r(step.command, "command"),
                                r(step.creates, "creates") if step.creates is not None else None,
                                r(step.unless, "unless") if step.unless is not None else None,
                                token, apply)
    result = session.run(script, step=STEP, label=name)
    state, detail = parse(result.stdout, token)
    if not state:
        raise RemoteError(host.name, STEP, f"{name}: no result line in the output")
    if upload is not None and apply and f"{token} content" in result.stdout.splitlines():
        assert isinstance(step, FileStep)
        session.put_bytes(upload, dest, step=STEP, mode=int(step.mode, 8))
        session.run(file_attrs_script(dest, step.mode, step.owner, step.group), step=STEP,
                    label=f"{name} attributes")
    return StepOutcome(name, state, detail)


def assemble_host(session: HostSession, spec: AppSpec, host: Host, *, apply: bool) -> HostAssembly:
    """Every assemble step of ``host`` in order; stops at the first failing step."""
    out = HostAssembly(host.name)
    ctx = host_context(spec, host, None)
    for step in runtime_for(spec, host).assemble:
        try:
            out.steps.append(run_step(session, spec, host, step, ctx, apply=apply))
        except TarsError as exc:
            out.steps.append(StepOutcome(step_label(step), "failed", str(exc)))
            out.error = str(exc)
            break
    return out
