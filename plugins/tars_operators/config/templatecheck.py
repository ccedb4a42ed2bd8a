"""Jinja2 checks: every template-valued field compiles, every template file exists inside the
config repository and compiles, and templates read only the secrets the app lists.

Rendering needs a host and a version, so it happens at run time; syntax and secret uses
(``config.secrets``) are checked here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateSyntaxError

from tars_operators.config.problems import Problem
from tars_operators.config.secrets import Allowlist, SecretRef, may_use_secrets, secret_refs, template_source
from tars_operators.config.templating import check_syntax
from tars_operators.config.yamlio import PathKey, Pos
from tars_operators.errors import TemplateRefused

if TYPE_CHECKING:
    from tars_operators.config.checks import CheckContext
    from tars_operators.config.schema import AppConfig

# Template-valued fields by section (docs/config.md lists the same set).
_CHECK_FIELDS = ("url", "expect_body", "address", "port", "command")
_LB_FIELDS = {
    "haproxy": ("socket", "address", "lb_host", "server"),
    "nginx": ("lb_host", "upstream_file", "upstream", "reload", "server", "pid_file"),
    "command": ("drain", "enable", "state"),
}
# Fields rendered with ``var``/``conn`` (steps.templates); no other field's context has them.
SECRET_FIELDS = (("install", "pre_install"), ("install", "post_install"))
_file_cache: dict[Path, tuple[tuple[int, int], str | None, tuple[SecretRef, ...]]] = {}


def template_fields(config: AppConfig) -> Iterator[tuple[PathKey, str]]:
    """(path, source) of every template-valued field (sections with broken fields skipped)."""
    for section in (_artifact, _install, _service, _checks, _traffic):
        try:
            found = list(section(config))
        except AttributeError:  # a partial config: this section has a broken field
            continue
        yield from found


def _artifact(cfg: AppConfig) -> Iterator[tuple[PathKey, str]]:
    yield ("artifact", "url"), cfg.artifact.url
    yield ("artifact", "checksum", "url"), cfg.artifact.checksum.url or ""
    yield ("artifact", "latest_url"), cfg.artifact.latest_url or ""


def _install(cfg: AppConfig) -> Iterator[tuple[PathKey, str]]:
    yield ("install", "deploy_root"), cfg.install.deploy_root
    for key in ("pre_install", "post_install"):
        for index, command in enumerate(getattr(cfg.install, key)):
            yield ("install", key, index), command


def _service(cfg: AppConfig) -> Iterator[tuple[PathKey, str]]:
    for key in ("start", "stop", "restart", "status"):
        yield ("service", key), getattr(cfg.service, key) or ""


def _checks(cfg: AppConfig) -> Iterator[tuple[PathKey, str]]:
    for section in ("health", "smoke"):
        for index, item in enumerate(getattr(cfg, section)):
            for key in _CHECK_FIELDS:
                value = getattr(item, key) if key in type(item).model_fields else None
                if isinstance(value, str):
                    yield (section, index, key), value


def _traffic(cfg: AppConfig) -> Iterator[tuple[PathKey, str]]:
    for provider, keys in _LB_FIELDS.items():
        block: Any = getattr(cfg.traffic, provider)
        for key in keys if block is not None else ():
            yield ("traffic", provider, key), getattr(block, key) or ""


def check_template_fields(ctx: CheckContext) -> Iterable[Problem]:
    """A problem for every template field with a jinja2 syntax error."""
    for path, source in template_fields(ctx.config):
        if "{" not in source:
            continue
        try:
            check_syntax(source)
        except TemplateSyntaxError as exc:
            yield Problem(path, f"expected a valid jinja2 template, got a syntax error:"
                          f" {exc.message} (template line {exc.lineno})")


def check_template_files(ctx: CheckContext) -> Iterable[Problem]:
    """A problem for every ``install.templates[].src`` outside the config repository, missing or
    not compiling, and every ``dest`` outside the release directory."""
    for index, item in enumerate(ctx.config.install.templates):
        where: PathKey = ("install", "templates", index, "src")
        try:
            path = template_source(ctx.source, item.src)
            error = _scan_file(path)[0]
        except TemplateRefused as exc:
            yield Problem(where, str(exc))
            error = None
        except OSError:
            yield Problem(where, f"template file not found: {item.src} (relative to {ctx.source.name})")
            error = None
        if error:
            yield Problem(where, error)
        if item.dest.startswith("/") or ".." in Path(item.dest).parts:
            yield Problem(("install", "templates", index, "dest"), "expected a path inside the"
                          f" release directory, got '{item.dest}'")


def check_template_secrets(ctx: CheckContext) -> Iterable[Problem]:
    """A problem for every secret a template reads that ``secrets`` does not list (template files
    at their own line and column), for ``var``/``conn`` in fields that cannot read secrets, and
    for Tars's own connections listed in ``secrets.connections``."""
    allow = Allowlist.of(ctx.config)
    for index, conn_id in enumerate(ctx.config.secrets.connections):
        reason = allow.reserved(conn_id)
        if reason is not None:
            yield Problem(("secrets", "connections", index), f"expected a connection templates"
                          f" may read, got '{conn_id}', {reason}",
                          "give the template its own connection with only what it needs")
    for path, source in template_fields(ctx.config):
        if not may_use_secrets(source):
            continue
        try:
            refs = secret_refs(source)
        except TemplateSyntaxError:  # reported by check_template_fields
            continue
        secret_field = path[:2] in SECRET_FIELDS
        for ref in refs:
            if secret_field:
                reason = allow.refusal(ref)
                if reason is not None:
                    yield Problem(path, reason, allow.hint(ref))
            else:
                yield Problem(path, f"expected no {ref.kind} here (only install.templates files and"
                              f" install.pre_install/post_install can read secrets), got {ref.text}")
    for index, item in enumerate(ctx.config.install.templates):
        try:
            path_ = template_source(ctx.source, item.src)
            refs = _scan_file(path_)[1]
        except (TemplateRefused, OSError):  # reported by check_template_files
            continue
        for ref in refs:
            reason = allow.refusal(ref)
            if reason is not None:
                yield Problem(("install", "templates", index), reason, allow.hint(ref),
                              file=path_, pos=Pos(ref.line, ref.col))


def _scan_file(path: Path) -> tuple[str | None, tuple[SecretRef, ...]]:
    """(syntax error, secret uses) of a template file, cached by mtime and size."""
    stat = os.stat(path)
    key = (stat.st_mtime_ns, stat.st_size)
    hit = _file_cache.get(path)
    if hit is not None and hit[0] == key:
        return hit[1], hit[2]
    refs: tuple[SecretRef, ...] = ()
    try:
        source = path.read_text(encoding="utf-8")
        check_syntax(source)
        refs = secret_refs(source, columns=True)
        error = None
    except TemplateSyntaxError as exc:
        error = (f"expected a valid jinja2 template in {path.name}, got a syntax error:"
                 f" {exc.message} (line {exc.lineno})")
    except UnicodeDecodeError:
        error = f"expected a UTF-8 text file, got binary data in {path.name}"
    _file_cache[path] = (key, error, refs)
    return error, refs
