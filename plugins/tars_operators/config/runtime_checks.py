"""Lint of the ``runtime`` section (app and groups), registered with ``config.checks``:
template fields compile and read no secret, ``assemble`` file sources lie inside the config
repository, compile and read only listed secrets, paths are absolute. Messages are
``file:line:col: runtime.assemble[2].src: …`` like every other config problem."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from jinja2 import TemplateSyntaxError

from tars_operators.config.checks import CheckContext, check
from tars_operators.config.problems import Problem
from tars_operators.config.runtime import (
    CommandRequirement, CommandStep, DirStep, FileStep, FreeDiskRequirement, PathRequirement,
    PortRequirement, Runtime,
)
from tars_operators.config.secrets import Allowlist, secret_refs, template_source
from tars_operators.config.templating import check_syntax
from tars_operators.config.yamlio import PathKey
from tars_operators.errors import TemplateRefused


def _sections(ctx: CheckContext) -> Iterator[tuple[PathKey, Runtime]]:
    yield ("runtime",), ctx.config.runtime
    for name, group in ctx.config.hosts.groups.items():
        if group.runtime is not None:
            yield ("hosts", "groups", name, "runtime"), group.runtime


def _fields(base: PathKey, rt: Runtime) -> Iterator[tuple[PathKey, str, bool]]:
    """(path, template, must be an absolute path)."""
    for i, req in enumerate(rt.requires):
        at = (*base, "requires", i)
        if isinstance(req, CommandRequirement):
            yield (*at, "command"), req.command, False
            if req.version_command:
                yield (*at, "version_command"), req.version_command, False
        elif isinstance(req, PathRequirement):
            yield (*at, "path"), req.path, True
        elif isinstance(req, PortRequirement):
            yield (*at, "port"), str(req.port), False
            yield (*at, "address"), req.address, False
    for i, step in enumerate(rt.assemble):
        at = (*base, "assemble", i)
        if isinstance(step, DirStep):
            yield (*at, "path"), step.path, True
        elif isinstance(step, FileStep):
            yield (*at, "dest"), step.dest, True
        elif isinstance(step, CommandStep):
            yield (*at, "command"), step.command, False
            if step.creates is not None:
                yield (*at, "creates"), step.creates, True
            if step.unless is not None:
                yield (*at, "unless"), step.unless, False


@check()
def _runtime_shapes(ctx: CheckContext) -> Iterable[Problem]:
    for base, rt in _sections(ctx):
        for i, req in enumerate(rt.requires):
            if isinstance(req, FreeDiskRequirement) and (req.mb is None) == (req.artifact_times is None):
                yield Problem((*base, "requires", i), "expected exactly one of 'mb' (absolute) or "
                              "'artifact_times' (relative to the artifact size)", at_key=True)
        for i, step in enumerate(rt.assemble):
            if isinstance(step, CommandStep) and step.creates is None and step.unless is None:
                yield Problem((*base, "assemble", i), "expected a guard, 'creates' or 'unless' "
                              "(a step must be able to say it has nothing to do)", at_key=True)


@check()
def _runtime_templates(ctx: CheckContext) -> Iterable[Problem]:
    for base, rt in _sections(ctx):
        for path, source, absolute in _fields(base, rt):
            if absolute and not source.lstrip().startswith(("/", "{")):
                yield Problem(path, f"expected an absolute path (or a template giving one), got "
                              f"'{source}'")
            if "{" not in source:
                continue
            try:
                check_syntax(source)
                refs = secret_refs(source)
            except TemplateSyntaxError as exc:
                yield Problem(path, f"expected a valid jinja2 template, got a syntax error:"
                              f" {exc.message} (template line {exc.lineno})")
                continue
            for ref in refs:
                yield Problem(path, f"expected no {ref.kind} here (only runtime.assemble files "
                              f"and install templates can read secrets), got {ref.text}")


@check()
def _runtime_files(ctx: CheckContext) -> Iterable[Problem]:
    allow = Allowlist.of(ctx.config)
    for base, rt in _sections(ctx):
        for i, step in enumerate(rt.assemble):
            if not isinstance(step, FileStep):
                continue
            where: PathKey = (*base, "assemble", i, "src")
            try:
                path = template_source(ctx.source, step.src)
                source = path.read_text(encoding="utf-8")
                check_syntax(source)
                refs = secret_refs(source)
            except TemplateRefused as exc:
                yield Problem(where, str(exc))
                continue
            except (OSError, UnicodeDecodeError):
                shown = os.path.basename(str(ctx.source))
                yield Problem(where, f"template file not found or not text: {step.src} "
                              f"(relative to {shown})")
                continue
            except TemplateSyntaxError as exc:
                yield Problem(where, f"expected a valid jinja2 template in {path.name}, got a "
                              f"syntax error: {exc.message} (line {exc.lineno})")
                continue
            for ref in refs:
                reason = allow.refusal(ref)
                if reason is not None:
                    yield Problem(where, reason, allow.hint(ref))
