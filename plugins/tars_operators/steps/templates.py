"""Rendering of install templates and commands, with lazy, masked secret lookups.

Templates may use ``{{ conn.<conn_id>.password }}`` (also ``login``, ``host``, ``port``,
``schema``, ``extra``) and ``{{ var.<name> }}``. A connection or variable is looked up only
when a template uses it, and every value read is registered with Airflow's secrets masker.
Rendered content is never logged: it travels to the host over SFTP only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from tars_operators.config.spec import AppSpec, Host
from tars_operators.config.templating import host_context, render
from tars_operators.errors import InvalidValue, TarsError
from tars_operators.remote.validate import validate_mode, validate_relative_path


def _mask(value: Any) -> Any:
    if isinstance(value, str) and value:
        from airflow.sdk.log import mask_secret

        mask_secret(value)
    return value


class _ConnectionView:
    """Read-only view of one Airflow Connection; secret fields are masked when read."""

    def __init__(self, conn_id: str):
        from airflow.sdk import BaseHook

        try:
            self._conn = BaseHook.get_connection(conn_id)
        except Exception as exc:  # AirflowNotFoundException and backend errors
            raise TarsError(f"template uses connection {conn_id!r}, which cannot be read: "
                            f"{type(exc).__name__}") from None

    @property
    def password(self) -> Any:
        return _mask(self._conn.password)

    @property
    def login(self) -> Any:
        return self._conn.login

    @property
    def host(self) -> Any:
        return self._conn.host

    @property
    def port(self) -> Any:
        return self._conn.port

    @property
    def schema(self) -> Any:
        return self._conn.schema

    @property
    def extra(self) -> dict[str, Any]:
        return {k: _mask(v) for k, v in self._conn.extra_dejson.items()}


class ConnectionLookup:
    """``conn.<conn_id>``: resolved on first use only."""

    def __init__(self) -> None:
        self._seen: dict[str, _ConnectionView] = {}

    def __getattr__(self, conn_id: str) -> _ConnectionView:
        if conn_id.startswith("_"):
            raise AttributeError(conn_id)
        if conn_id not in self._seen:
            self._seen[conn_id] = _ConnectionView(conn_id)
        return self._seen[conn_id]


class VariableLookup:
    """``var.<name>``: an Airflow Variable, read on first use only, masked."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        from airflow.sdk import Variable

        try:
            return _mask(Variable.get(name))
        except Exception as exc:  # not found, or no backend reachable
            raise TarsError(f"template uses variable {name!r}, which cannot be read: "
                            f"{type(exc).__name__}") from None


def install_context(spec: AppSpec, host: Host, version: str) -> dict[str, Any]:
    """``host_context`` plus the lazy ``conn`` and ``var`` lookups."""
    return {**host_context(spec, host, version), "conn": ConnectionLookup(), "var": VariableLookup()}


@dataclass(frozen=True)
class RenderedFile:
    dest: str
    mode: str
    content: bytes

    def __repr__(self) -> str:  # never show rendered content (it may hold secrets)
        return f"RenderedFile(dest={self.dest!r}, mode={self.mode!r}, {len(self.content)} bytes)"


def render_templates(spec: AppSpec, host: Host, ctx: dict[str, Any]) -> list[RenderedFile]:
    """Render ``install.templates`` (src relative to the config dir) for one host."""
    out = []
    for tpl in spec.config.install.templates:
        src = Path(tpl.src)
        path = src if src.is_absolute() else spec.config_dir / src
        dest, mode = validate_relative_path(tpl.dest, "template dest"), validate_mode(tpl.mode)
        try:
            source = path.read_text()
        except OSError as exc:
            raise InvalidValue(f"{host.name}: stage: template {tpl.src}: cannot read {path}: "
                               f"{exc.strerror}") from None
        out.append(RenderedFile(dest, mode, render_text(source, ctx, f"template {tpl.src}", host).encode()))
    return out


def render_text(source: str, ctx: dict[str, Any], what: str, host: Host) -> str:
    """Render one template; errors name the template, never the rendered text."""
    try:
        return render(source, ctx)
    except TemplateError as exc:
        raise InvalidValue(f"{host.name}: {what}: {type(exc).__name__}: {exc}") from None
