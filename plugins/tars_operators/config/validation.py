"""Pydantic's validation errors translated into :class:`Problem` s a person can act on.

Pydantic reports a union's failure once per member, with member tags in the location
(``('strategy', 'batches', 1, 'constrained-int')``). Tags are dropped by walking the location
along the data; a union's errors are merged into one "expected A or B" message unless one member
clearly matched (its errors go deeper), in which case only that member's errors are kept.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from tars_operators.config import schema
from tars_operators.config.problems import Problem, describe, did_you_mean
from tars_operators.config.yamlio import PathKey

PERCENT = r"^(100|[1-9]?[0-9])%$"
PATTERNS = {
    schema.SAFE_NAME: "a name of lowercase letters, digits and '_' that starts with a letter"
    " (at most 63 characters)",
    schema.HOST_NAME: "a host name of letters, digits, '.', '_' and '-' (at most 63 characters)",
    r"^([01][0-9]|2[0-3]):[0-5][0-9]$": "a time HH:MM between 00:00 and 23:59",
    PERCENT: "a percentage like '25%'",
    r"^[0-9a-f]{64}$": "a sha256: 64 lowercase hex digits",
    r"^0?[0-7]{3}$": "an octal file mode like '0644'",
}
UNIONS = {
    frozenset({"constrained-int", "constrained-str"}): "a host count (integer >= 0) or a"
    " percentage like '25%'",
    frozenset({"int", "tuple[str, ...]"}): "a host count or a list of host names",
    frozenset({"int", "str"}): "an integer or a template string",
}
TYPES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
}
BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def problems_from(error: ValidationError, model: type[BaseModel]) -> list[Problem]:
    """Translate every error of ``error`` (raised validating a ``model``)."""
    unions: dict[PathKey, list[tuple[PathKey, frozenset[str], dict[str, Any]]]] = {}
    plain: list[Problem] = []
    for err in error.errors(include_url=False):
        path, union_at, tags, owner = _normalise(err["loc"], model)
        detail: dict[str, Any] = {**err, "owner": owner}
        if union_at is None:
            plain.append(_problem(path, detail))
        else:
            unions.setdefault(union_at, []).append((path, tags, detail))
    for union_at, members in unions.items():
        plain.extend(_union_problems(union_at, members))
    return plain


def _normalise(
    loc: Sequence[str | int], model: type[BaseModel]
) -> tuple[PathKey, PathKey | None, frozenset[str], Any]:
    """Drop union member tags from ``loc``: (path, where the union is, its tags, last owner type).

    The location is walked along the schema: a string met where the schema has a union is
    the tag pydantic gave one member (``'http'``, ``'constrained-int'``), not a key.
    """
    path: list[str | int] = []
    union_at: PathKey | None = None
    tags: set[str] = set()
    current: Any = model
    owner: Any = None
    for part in loc:
        members = _members(current)
        if members is not None and isinstance(part, str):
            union_at = union_at if union_at is not None else tuple(path)
            tags.add(part)
            current = _pick(members, part)
            continue
        path.append(part)
        owner = current
        current = _child(current, part) if current is not None else None
    return tuple(path), union_at, frozenset(tags), owner


def _members(tp: Any) -> tuple[Any, ...] | None:
    """The members of a real union (``X | None`` is not one: pydantic gives it no tags)."""
    tp = _unwrap(tp)
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return None
    members = tuple(m for m in typing.get_args(tp) if m is not type(None))
    return members if len(members) > 1 else None


def _pick(members: tuple[Any, ...], tag: str) -> Any:
    for member in members:
        member = _unwrap(member)
        if _is_model(member) and "kind" in member.model_fields:
            if tag in typing.get_args(member.model_fields["kind"].annotation):
                return member
        origin = typing.get_origin(member)
        if origin is not None and tag.startswith(origin.__name__):
            return member
    return None


def _union_problems(
    union_at: PathKey, members: list[tuple[PathKey, frozenset[str], dict[str, Any]]]
) -> list[Problem]:
    deepest = max(len(path) for path, _, _ in members)
    if deepest > len(union_at):
        return [_problem(path, err) for path, _, err in members if len(path) == deepest]
    tags = frozenset().union(*(t for _, t, _ in members))
    what = UNIONS.get(tags, " or ".join(sorted(tags)))
    found = describe(members[0][2]["input"])
    return [Problem(union_at, f"expected {what}, got {found}")]


def _problem(path: PathKey, err: dict[str, Any]) -> Problem:
    kind, ctx, found = err["type"], err.get("ctx") or {}, err["input"]
    got = describe(found)
    if kind == "missing":
        return Problem(path, "required field missing", at_key=True)
    if kind == "extra_forbidden":
        return _unknown_key(path, err["owner"])
    if kind in TYPES:
        return Problem(path, f"expected {TYPES[kind]}, got {got}")
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        what = PATTERNS.get(pattern, f"a string matching {pattern}")
        hint = _name_hint(found) if pattern == schema.SAFE_NAME else None
        return Problem(path, f"expected {what}, got {got}", hint)
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        hint = did_you_mean(str(found), choices) if isinstance(found, str) else None
        return Problem(path, f"expected one of {ctx.get('expected')}, got {got}", hint)
    if kind in BOUNDS:
        limit = next(iter(ctx.values()), "?")
        limit = int(limit) if isinstance(limit, float) and limit.is_integer() else limit
        return Problem(path, f"expected a number {BOUNDS[kind]} {limit}, got {got}")
    if kind == "union_tag_invalid":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        hint = did_you_mean(str(ctx.get("tag")), choices)
        return Problem((*path, "kind"), f"expected one of {ctx.get('expected_tags')},"
                       f" got '{ctx.get('tag')}'", hint)
    if kind == "union_tag_not_found":
        return Problem((*path, "kind"), "required field missing (one of 'http', 'tcp', 'command')",
                       at_key=True)
    message = str(err["msg"])
    if kind == "value_error":
        return Problem(path, message.removeprefix("Value error, "))
    return Problem(path, f"{message[:1].lower()}{message[1:]}, got {got}")


def _unknown_key(path: PathKey, owner: Any) -> Problem:
    key = str(path[-1])
    removed = schema.REMOVED_FIELDS.get(tuple(str(p) for p in path))
    if removed is not None:
        return Problem(path, removed[0], removed[1], at_key=True)
    fields = _field_names(owner)
    hint = did_you_mean(key, fields) if fields else None
    if hint is None and fields:
        return Problem(path, f"unknown key '{key}', expected one of: {', '.join(sorted(fields))}",
                       at_key=True)
    return Problem(path, f"unknown key '{key}'", hint, at_key=True)


def _name_hint(found: Any) -> str | None:
    if not isinstance(found, str):
        return None
    slug = re.sub(r"[^a-z0-9_]+", "_", found.strip().lower()).strip("_")
    return f"did you mean '{slug}'?" if re.match(schema.SAFE_NAME, slug) else None


def _field_names(tp: Any) -> list[str]:
    """Field names of the model ``tp`` (of every model member, for a union)."""
    members = typing.get_args(_unwrap(tp)) or (_unwrap(tp),)
    names: list[str] = []
    for member in members:
        member = _unwrap(member)
        if _is_model(member):
            names.extend(name for name in member.model_fields if name not in names)
    return names


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _child(tp: Any, part: str | int) -> Any:
    tp = _unwrap(tp)
    if tp is None:
        return None
    if _is_model(tp):
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field is not None else None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (tuple, list) and isinstance(part, int):
        return args[0] if args else None
    if origin is dict:
        return args[1]
    if args:  # a union: the first member that has the child
        for member in args:
            found = _child(member, part)
            if found is not None:
                return found
    return None
