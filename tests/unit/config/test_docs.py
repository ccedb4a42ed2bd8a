"""docs/config.md documents every field of the schema (a new field needs a line there)."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tars_operators.config.schema import AppConfig

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[3] / "docs" / "config.md"


def _models(tp: Any) -> tuple[list[type[BaseModel]], str]:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp], ""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (tuple, list):
        found, suffix = _models(args[0])
        return found, "[]" + suffix
    if origin in (typing.Union, types.UnionType):
        return [m for arg in args for m in _models(arg)[0]], ""
    return [], ""


def field_paths(model: type[BaseModel] = AppConfig, prefix: str = "") -> Iterator[str]:
    for name, info in model.model_fields.items():
        name = info.alias or name  # as a config spells it (``from``, not ``from_``)
        found, suffix = _models(info.annotation)
        if not found or suffix:  # leaves, and lists of models, are documented by name
            yield prefix + name
        for sub in found:
            yield from field_paths(sub, f"{prefix}{name}{suffix}.")


def test_every_field_is_documented() -> None:
    text = DOC.read_text()
    missing = []
    for path in sorted(set(field_paths())):
        shown = path.replace("smoke[]", "health[]")
        if shown.startswith("steps.") and shown.endswith((".timeout", ".retries")):
            shown = shown.rsplit(".", 2)[0] + "." + shown.rsplit(".", 2)[1]  # steps.stage
        if f"`{shown}`" not in text:
            missing.append(path)
    assert not missing, f"fields missing from docs/config.md: {missing}"
