"""YAML files read once: parsed data cached by path, mtime and size (defaults, inventories).

The DAG factory loads every app at parse time and many apps share ``defaults.yaml`` and an
inventory, so each shared file is read and parsed once per change, not once per app.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tars_operators.config.yamlio import Positions, parse_fast, parse_with_positions

_CACHE: dict[Path, tuple[tuple[int, int], YamlFile]] = {}
_CACHE_LIMIT = 4096


@dataclass
class YamlFile:
    """One parsed YAML file: its data, or the syntax error that stopped the parser."""

    path: Path
    text: str
    data: Any = None
    error: yaml.YAMLError | None = None
    _positions: Positions | None = field(default=None, repr=False)

    def positions(self) -> Positions:
        """Line/column of every key (parsed again, slowly, only when an error needs them)."""
        if self._positions is None:
            try:
                self._positions = parse_with_positions(self.text)[1]
            except yaml.YAMLError:
                self._positions = Positions({})
        return self._positions


def read_yaml(path: Path, *, cache: bool = True) -> YamlFile:
    """Read and parse ``path``; raises ``OSError`` if it cannot be read.

    A syntax error is kept in ``error`` (from the pure-Python parser, whose messages are the
    same on every machine) rather than raised, so callers can report it with the others.
    """
    stat = os.stat(path)
    key = (stat.st_mtime_ns, stat.st_size)
    if cache:
        hit = _CACHE.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    parsed = YamlFile(path, text)
    try:
        parsed.data = parse_fast(text)
    except yaml.YAMLError:
        try:
            parsed.data, parsed._positions = parse_with_positions(text)
        except yaml.YAMLError as exc:
            parsed.error = exc
    if cache:
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        _CACHE[path] = (key, parsed)
    return parsed


def clear_cache() -> None:
    """Forget every cached file (tests that rewrite files within one mtime tick)."""
    _CACHE.clear()
