"""Rendering of install templates and commands, with lazy, masked, listed-only secret lookups.

Templates may use ``{{ conn.<conn_id>.password }}`` (also ``login``, ``host``, ``port``,
``schema``, ``extra``) and ``{{ var.<name> }}`` for the names the app lists in ``secrets``
(``config.secrets.Allowlist``, the rule lint applies too); any other name raises
``TemplateRefused``. A connection or variable is looked up only when a template uses it, and
every value read is registered with Airflow's secrets masker. Rendered content is never
logged: it travels to the host over SFTP only. A command whose rendering read a secret runs
from an uploaded 0600 script, never from its text on a command line (a host's ``ps``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError

from tars_operators.config.secrets import Allowlist, Kind, SecretRef, template_source
from tars_operators.config.spec import AppSpec, Host
from tars_operators.config.templating import host_context, render
from tars_operators.errors import InvalidValue, TarsError, TemplateRefused
from tars_operators.remote.commands import q
from tars_operators.remote.validate import validate_mode, validate_relative_path

STEP = "stage"


def _mask(value: Any) -> Any:
    if isinstance(value, str) and value:
        from airflow.sdk.log import mask_secret

        mask_secret(value)
    return value


class SecretReader:
    """What one rendering may read (the app's ``secrets``), and whether it read anything."""

    def __init__(self, allow: Allowlist, what: str):
        self.allow, self.what, self.read = allow, what, False

    def admit(self, kind: Kind, name: str) -> None:
        """Raise unless ``kind.name`` is listed; count it as read."""
        ref = SecretRef(kind, name, 0)
        reason = self.allow.refusal(ref)
        if reason is not None:
            hint = self.allow.hint(ref)
            raise TemplateRefused(f"{self.what}: {reason}" + (f"; {hint}" if hint else ""))
        self.read = True


class _ConnectionView:
    """Read-only view of one Airflow Connection; secret fields are masked when read."""

    def __init__(self, conn_id: str, what: str):
        from airflow.sdk import BaseHook

        try:
            self._conn = BaseHook.get_connection(conn_id)
        except Exception as exc:  # AirflowNotFoundException and backend errors
            raise TarsError(f"{what}: connection {conn_id!r} cannot be read: "
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
    """``conn.<conn_id>``: a listed connection, resolved on first use only."""

    def __init__(self, reader: SecretReader) -> None:
        self._reader = reader
        self._seen: dict[str, _ConnectionView] = {}

    def __getattr__(self, conn_id: str) -> _ConnectionView:
        if conn_id.startswith("_"):
            raise AttributeError(conn_id)
        self._reader.admit("conn", conn_id)
        if conn_id not in self._seen:
            self._seen[conn_id] = _ConnectionView(conn_id, self._reader.what)
        return self._seen[conn_id]


class VariableLookup:
    """``var.<name>``: a listed Airflow Variable, read on first use only, masked."""

    def __init__(self, reader: SecretReader) -> None:
        self._reader = reader

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        self._reader.admit("var", name)
        from airflow.sdk import Variable

        try:
            return _mask(Variable.get(name))
        except Exception as exc:  # not found, or no backend reachable
            raise TarsError(f"{self._reader.what}: variable {name!r} cannot be read: "
                            f"{type(exc).__name__}") from None


def install_context(spec: AppSpec, host: Host, version: str) -> dict[str, Any]:
    """``host_context``; each rendering adds its own ``var`` and ``conn`` (see ``render_install``)."""
    return host_context(spec, host, version)


def render_install(spec: AppSpec, host: Host, ctx: dict[str, Any], source: str, what: str) -> tuple[str, bool]:
    """Render one install template or command: (text, whether it read a secret)."""
    reader = SecretReader(Allowlist.of(spec.config), f"{host.name}: {STEP}: {what}")
    scoped = {**ctx, "var": VariableLookup(reader), "conn": ConnectionLookup(reader)}
    return render_text(source, scoped, what, host), reader.read


@dataclass(frozen=True)
class RenderedFile:
    dest: str
    mode: str
    content: bytes

    def __repr__(self) -> str:  # never show rendered content (it may hold secrets)
        return f"RenderedFile(dest={self.dest!r}, mode={self.mode!r}, {len(self.content)} bytes)"


def render_templates(spec: AppSpec, host: Host, ctx: dict[str, Any]) -> list[RenderedFile]:
    """Render ``install.templates`` (src inside the config repository) for one host."""
    out = []
    for tpl in spec.config.install.templates:
        what = f"template {tpl.src}"
        try:
            path = template_source(spec.source, tpl.src)
        except TemplateRefused as exc:
            raise TemplateRefused(f"{host.name}: {STEP}: {what}: {exc}") from None
        dest, mode = validate_relative_path(tpl.dest, "template dest"), validate_mode(tpl.mode)
        try:
            source = path.read_text()
        except OSError as exc:
            raise InvalidValue(f"{host.name}: {STEP}: {what}: cannot read {path}: "
                               f"{exc.strerror}") from None
        out.append(RenderedFile(dest, mode, render_install(spec, host, ctx, source, what)[0].encode()))
    return out


@dataclass(frozen=True)
class RenderedCommand:
    """A rendered ``install.pre_install``/``post_install`` command."""

    label: str  # install.post_install[0]
    text: str
    secret: bool  # its rendering read a Variable or Connection

    def __repr__(self) -> str:  # never show rendered content (it may hold secrets)
        return f"RenderedCommand({self.label}, secret={self.secret}, {len(self.text)} chars)"


@dataclass(frozen=True)
class Script:
    """A command with a secret, uploaded (0600, in the stage's 0700 upload dir) and run by path."""

    path: str
    content: bytes

    def __repr__(self) -> str:
        return f"Script({self.path!r}, {len(self.content)} bytes)"


@dataclass(frozen=True)
class InstallCommands:
    pre_install: tuple[RenderedCommand, ...]
    post_install: tuple[RenderedCommand, ...]

    def lines(self, script_dir: str) -> tuple[list[str], list[str], list[Script]]:
        """The commands as the install command runs them (pre, post) and the scripts to upload:
        a command without secrets stays inline (readable in logs), one with secrets becomes
        ``sh -e <script>``."""
        scripts: list[Script] = []

        def line(cmd: RenderedCommand, name: str) -> str:
            if not cmd.secret:
                return cmd.text
            script = Script(f"{script_dir}/{name}.sh", cmd.text.encode() + b"\n")
            scripts.append(script)
            return f"sh -e {q(script.path)}"

        pre = [line(c, f"pre_install-{i}") for i, c in enumerate(self.pre_install)]
        post = [line(c, f"post_install-{i}") for i, c in enumerate(self.post_install)]
        return pre, post, scripts


def render_commands(spec: AppSpec, host: Host, ctx: dict[str, Any]) -> InstallCommands:
    """Render ``install.pre_install`` and ``install.post_install`` for one host."""
    install = spec.config.install

    def each(key: str, sources: tuple[str, ...]) -> tuple[RenderedCommand, ...]:
        out = []
        for i, source in enumerate(sources):
            label = f"install.{key}[{i}]"
            out.append(RenderedCommand(label, *render_install(spec, host, ctx, source, label)))
        return tuple(out)

    return InstallCommands(each("pre_install", install.pre_install), each("post_install", install.post_install))


def render_text(source: str, ctx: dict[str, Any], what: str, host: Host) -> str:
    """Render one template; errors name the template, never the rendered text."""
    try:
        return render(source, ctx)
    except TemplateError as exc:
        raise InvalidValue(f"{host.name}: {what}: {type(exc).__name__}: {exc}") from None
