"""What install templates may read: the listed Variables and Connections, and files inside the
config repository. One rule, two callers: lint (``config.templatecheck``) and run time
(``steps.templates``).

Secret uses are found in jinja2's syntax tree, never by matching the source text: ``var.<name>``
and ``conn.<id>`` (or ``var['name']``) name a secret literally; any other use of ``var`` or
``conn`` (``var[x]``, ``var|attr(...)``, passing it to a filter or a macro) is dynamic and
refused, since no one could tell which secret it reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from jinja2 import nodes
from jinja2.lexer import get_lexer

from tars_operators.config.templating import ENV
from tars_operators.errors import TemplateRefused

if TYPE_CHECKING:
    from tars_operators.config.schema import AppConfig

Kind = Literal["var", "conn"]
KINDS: tuple[Kind, ...] = ("var", "conn")
_WORD = re.compile(r"\b(?:var|conn)\b")
_NEWLINE = re.compile(r"\r\n|\r|\n")  # as jinja2's lexer splits lines
_NOUN = {"var": "Variable", "conn": "Connection"}
_LIST = {"var": "secrets.variables", "conn": "secrets.connections"}


@dataclass(frozen=True)
class SecretRef:
    """One use of ``var``/``conn`` in a template: ``name`` is None when it is not literal."""

    kind: Kind
    name: str | None
    line: int
    col: int = 1  # 1-based; found for template files only (an inline field points at YAML)

    @property
    def text(self) -> str:
        return f"{self.kind}.{self.name}" if self.name is not None else self.kind


def may_use_secrets(source: str) -> bool:
    """False when ``source`` cannot mention ``var`` or ``conn`` at all (skips parsing it)."""
    return _WORD.search(source) is not None


@lru_cache(maxsize=4096)
def secret_refs(source: str, *, columns: bool = False) -> tuple[SecretRef, ...]:
    """Every use of ``var``/``conn`` in ``source``, in line order (raises TemplateSyntaxError)."""
    if not may_use_secrets(source):
        return ()
    found = [_ref(node, parent) for node, parent in _walk(ENV.parse(source), None)
             if isinstance(node, nodes.Name) and node.name in KINDS]
    refs = [ref for ref in found if ref is not None]
    if columns:
        refs = _with_columns(source, refs)
    return tuple(sorted(refs, key=lambda r: (r.line, r.col)))


def _walk(node: nodes.Node, parent: nodes.Node | None) -> list[tuple[nodes.Node, nodes.Node | None]]:
    out = [(node, parent)]
    for child in node.iter_child_nodes():
        out += _walk(child, node)
    return out


def _ref(node: nodes.Name, parent: nodes.Node | None) -> SecretRef:
    kind: Kind = "var" if node.name == "var" else "conn"
    if node.ctx == "load":
        if isinstance(parent, nodes.Getattr) and parent.node is node:
            return SecretRef(kind, parent.attr, node.lineno)
        if (isinstance(parent, nodes.Getitem) and parent.node is node
                and isinstance(parent.arg, nodes.Const) and isinstance(parent.arg.value, str)):
            return SecretRef(kind, parent.arg.value, node.lineno)
    return SecretRef(kind, None, node.lineno)  # dynamic, passed on, or rebound


def _with_columns(source: str, refs: list[SecretRef]) -> list[SecretRef]:
    """Place each use at its ``var``/``conn`` token: the lexer gives lines, not columns, so the
    tokens are found in the text in order (the lexer only ever drops whitespace)."""
    text = "\n".join(_NEWLINE.split(source))
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    tokens = list(get_lexer(ENV).tokeniter(text, None))
    spots: list[tuple[int, Kind, str | None, int]] = []  # line, kind, literal name, col
    offset = 0
    for index, (lineno, kind, value) in enumerate(tokens):
        at = text.find(value, offset)
        if at < 0:
            continue
        offset = at + len(value)
        if kind == "name" and value in KINDS:
            spots.append((lineno, "var" if value == "var" else "conn", _literal_after(tokens, index),
                          at - line_starts[lineno - 1] + 1))
    placed, taken = [], set()
    for ref in refs:  # literal uses first: a dynamic one takes whichever token is left
        for exact in (True, False):
            match = next((i for i, s in enumerate(spots) if i not in taken and s[0] == ref.line
                          and s[1] == ref.kind and (not exact or s[2] == ref.name)), None)
            if match is not None:
                taken.add(match)
                placed.append(SecretRef(ref.kind, ref.name, ref.line, spots[match][3]))
                break
        else:
            placed.append(ref)
    return placed


def _literal_after(tokens: list[tuple[int, str, str]], index: int) -> str | None:
    after = [(kind, value) for _, kind, value in tokens[index + 1:index + 8] if kind != "whitespace"]
    if len(after) >= 2 and after[0] == ("operator", ".") and after[1][0] == "name":
        return after[1][1]
    if len(after) >= 3 and after[0] == ("operator", "[") and after[1][0] == "string":
        return after[1][1][1:-1]
    return None


@dataclass(frozen=True)
class Allowlist:
    """The Variables and Connections an app's templates may read (``secrets``), never Tars's own
    connections: the app's ``ssh.conn_id`` and every ``tars_*`` (``tars_api``…)."""

    variables: frozenset[str]
    connections: frozenset[str]
    ssh_conn_id: str

    @classmethod
    def of(cls, config: AppConfig) -> Allowlist:
        secrets = config.secrets
        return cls(frozenset(secrets.variables), frozenset(secrets.connections), config.ssh.conn_id)

    def reserved(self, conn_id: str) -> str | None:
        """Why a connection is Tars's own (None when it is not)."""
        if conn_id == self.ssh_conn_id:
            return "the SSH connection Tars logs in with (ssh.conn_id)"
        if conn_id.startswith("tars_"):
            return "a Tars connection (tars_*)"
        return None

    def refusal(self, ref: SecretRef) -> str | None:
        """Why ``ref`` may not be read, as ``expected …, got …`` (None when it may)."""
        if ref.name is None:
            return (f"expected a literal {ref.kind}.<name>, got {ref.kind} used dynamically"
                    f" (subscript, filter, argument or assignment); name secrets literally")
        listed = self.variables if ref.kind == "var" else self.connections
        reserved = self.reserved(ref.name) if ref.kind == "conn" else None
        if reserved is not None:
            return (f"expected a Connection listed in secrets.connections, got {ref.text},"
                    f" {reserved}: templates may never read it")
        if ref.name not in listed:
            return f"expected a {_NOUN[ref.kind]} listed in {_LIST[ref.kind]}, got {ref.text}"
        return None

    def hint(self, ref: SecretRef) -> str | None:
        if ref.name is None or (ref.kind == "conn" and self.reserved(ref.name)):
            return None
        return f"add '{ref.name}' to {_LIST[ref.kind]} if this template may read it"


def config_root(config_file: Path) -> Path:
    """The config repository: the directory holding the app-config directory
    (``configs/`` for ``configs/apps/demo.yaml``), symlinks resolved."""
    return config_file.absolute().parent.parent.resolve()


def template_source(config_file: Path, src: str) -> Path:
    """The file an ``install.templates[].src`` names, resolved (symlinks too); raises
    ``TemplateRefused`` when it is absolute or lies outside the config repository."""
    root = config_root(config_file)
    where = f"inside the config repository ({root.name}/, relative to {config_file.name})"
    if Path(src).is_absolute():
        raise TemplateRefused(f"expected a path {where}, got an absolute path '{src}'")
    path = (config_file.absolute().parent / src).resolve()
    if not path.is_relative_to(root):
        raise TemplateRefused(f"expected a path {where}, got '{src}', which resolves outside it")
    return path
