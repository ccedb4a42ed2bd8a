"""Rendering of the config's jinja2 templates (sandboxed, strict: an unknown name is an error)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tars_operators.config.spec import AppSpec, Host, template_context

ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)


@lru_cache(maxsize=4096)
def compile_template(source: str) -> Template:
    return ENV.from_string(source)


@lru_cache(maxsize=4096)
def check_syntax(source: str) -> None:
    """Raise ``TemplateSyntaxError`` (unknown filters and tests included) without building
    the template: a third of the cost of :func:`compile_template`. Apps share most templates."""
    ENV.compile(source, raw=True)


def render(source: str, context: dict[str, Any]) -> str:
    return compile_template(source).render(context)


def host_context(spec: AppSpec, host: Host, version: str | None) -> dict[str, Any]:
    """Template context for one host: adds ``deploy_root``, ``release_dir`` and ``url``."""
    ctx = template_context(spec, host, version)
    deploy_root = render(spec.config.install.deploy_root, ctx).rstrip("/")
    ctx["deploy_root"] = deploy_root
    ctx["release_dir"] = f"{deploy_root}/releases/{version}" if version else None
    if version:
        ctx["url"] = render(spec.config.artifact.url, ctx)
    return ctx
