"""One problem found in a config, and how it is shown: ``file:line:col: path: message; hint``."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tars_operators.config.yamlio import PathKey, Pos, Positions

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Problem:
    """A problem at ``path`` of the merged config, or at an explicit file position.

    ``at_key`` points at the key rather than its value (unknown keys, missing children).
    ``file``/``pos`` pin the problem elsewhere: an inventory, a template file, a YAML error.
    """

    path: PathKey
    message: str
    hint: str | None = None
    at_key: bool = False
    file: Path | None = None
    pos: Pos | None = None


@dataclass(frozen=True)
class Layer:
    """A YAML file that contributed to the merged config, with its positions (if parsed)."""

    file: Path
    positions: Positions | None
    merged: bool = True  # part of the merged app config (app file, defaults), not an inventory


def dotted(path: Sequence[str | int]) -> str:
    """``('strategy', 'batches', 1)`` → ``strategy.batches[1]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.match(part):
            out += f'["{part}"]'
        else:
            out += f".{part}" if out else part
    return out


def display_path(file: Path, base_dir: Path | None) -> str:
    """A file path relative to ``base_dir`` when below it (stable messages), else as given."""
    base = base_dir if base_dir is not None else Path.cwd()
    try:
        return os.path.relpath(file, base) if file.is_absolute() else str(file)
    except ValueError:  # another drive
        return str(file)


def describe(value: Any) -> str:
    """How a found value is shown: ``'abc'``, ``5``, ``true``, ``null``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return "'" + text.replace("\n", "\\n") + "'"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """``did you mean 'batches'?`` for the closest choice, if one is close enough."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else None


def format_problem(problem: Problem, layers: Sequence[Layer], base_dir: Path | None) -> str:
    """Render a problem as the one line a user sees."""
    file, pos = _place(problem, layers)
    where = f"{display_path(file, base_dir)}:{pos.line}:{pos.col}"
    text = f"{where}: {dotted(problem.path) + ': ' if problem.path else ''}{problem.message}"
    return f"{text}; {problem.hint}" if problem.hint else text


def _place(problem: Problem, layers: Sequence[Layer]) -> tuple[Path, Pos]:
    if problem.pos is not None:
        return problem.file or layers[0].file, problem.pos
    if problem.file is not None:
        for layer in layers:
            if layer.file == problem.file and layer.positions is not None:
                return layer.file, layer.positions.locate(problem.path, problem.at_key)
        return problem.file, Pos(1, 1)
    # The layer holding the deepest part of the path wins; the app file (first) wins ties.
    merged = [layer for layer in layers if layer.merged]
    best, best_depth = merged[0], -1
    for layer in merged:
        depth = layer.positions.depth(problem.path) if layer.positions else 0
        if depth > best_depth:
            best, best_depth = layer, depth
    if best.positions is None:
        return best.file, Pos(1, 1)
    return best.file, best.positions.locate(problem.path, problem.at_key)


def render_all(problems: Iterable[Problem], layers: Sequence[Layer], base_dir: Path | None) -> list[str]:
    """Every problem as a line, ordered by file (the app file first), then line and column."""
    keyed = []
    for index, problem in enumerate(problems):
        file, pos = _place(problem, layers)
        order = (file != layers[0].file, str(file), pos.line, pos.col, index)
        keyed.append((order, format_problem(problem, layers, base_dir)))
    seen: set[str] = set()
    lines = []
    for _, line in sorted(keyed):
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return lines
