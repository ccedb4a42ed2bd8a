"""``tars lint``: load app config files and directories, report every error of every file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tars_operators.config.loader import APP_SUFFIXES, LoadResult, load_files
from tars_operators.config.problems import display_path
from tars_operators.config.spec import AppSpec


@dataclass(frozen=True)
class LintReport:
    """What lint found: the apps that loaded and the error lines, in file order."""

    ok: tuple[AppSpec, ...] = ()
    errors: tuple[str, ...] = ()
    files_with_errors: int = 0
    files: int = 0
    missing: tuple[str, ...] = field(default=())


def app_files(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Files to lint (directories expanded, non-recursive, sorted) and paths that do not exist."""
    files: list[Path] = []
    missing: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in APP_SUFFIXES and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            missing.append(path)
    return files, missing


def lint(paths: Sequence[Path], *, base_dir: Path | None = None) -> LintReport:
    """Lint ``paths``; each file's defaults come from ``defaults.yaml`` beside its directory."""
    files, missing = app_files(paths)
    result: LoadResult = load_files(files, base_dir=base_dir)
    lines: list[str] = []
    seen: set[str] = set()
    for error in result.errors.values():
        for line in error.errors:  # a broken defaults.yaml is reported once, not per app
            if line not in seen:
                seen.add(line)
                lines.append(line)
    shown_missing = tuple(
        f"{display_path(p.absolute(), base_dir)}: no such file or directory" for p in missing
    )
    ok = tuple(sorted(result.specs.values(), key=lambda s: str(s.source)))
    return LintReport(ok, tuple(lines), len(result.errors), len(files), shown_missing)
