"""Where an app's config is: the one lookup the DAG file, the REST routes and ``tars`` share.

By convention ``<dir>/<app>.yaml`` (or ``.yml``) defines the app, and only that file is read.
An app defined in a file named otherwise is found by one full load of the directory; the
file is then remembered by app name (until a config file changes), so later lookups read
only that file and never parse the whole directory again. A broken file never hides another
app: it is reported for its own app only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tars_operators.config.loader import APP_SUFFIXES, DEFAULTS_NAME, load_all, load_files
from tars_operators.config.spec import AppSpec

Stamp = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class Found:
    """An app's spec, or why there is none."""

    spec: AppSpec | None
    errors: tuple[str, ...] = ()  # the app's own file is broken: its ``file:line:col`` lines
    broken: int = 0  # files of the directory with errors (as of the last full load)
    known: tuple[str, ...] = ()  # apps the directory defines (as of the last full load)


@dataclass(frozen=True)
class _Index:
    """Which file defines which app, as of the last full load of a config directory."""

    stamp: Stamp
    files: dict[str, Path]
    broken: int


_INDEX: dict[Path, _Index] = {}


def find_app(directory: Path, name: str, *, base_dir: Path | None = None) -> Found:
    """The spec of app ``name`` from ``directory``, always read from its file now."""
    directory = Path(directory)
    own = [directory / f"{name}{suffix}" for suffix in APP_SUFFIXES]
    own = [path for path in own if path.is_file()]
    if own:
        found = _read(own, name, base_dir)
        if found is not None:
            return found
    return _elsewhere(directory, name, base_dir)


def _read(files: list[Path], name: str, base_dir: Path | None) -> Found | None:
    """The app from these files, their errors, or None when they define other apps only."""
    result = load_files(files, base_dir=base_dir)
    if name in result.specs:
        return Found(result.specs[name])
    errors = tuple(line for err in result.errors.values() for line in err.errors)
    return Found(None, errors) if errors else None


def _elsewhere(directory: Path, name: str, base_dir: Path | None) -> Found:
    """An app whose file is not named after it: from the index, else one full load."""
    stamp = _stamp(directory)
    index = _INDEX.get(directory)
    if index is not None:
        known = index.files.get(name)
        if known is not None and known.is_file():
            found = _read([known], name, base_dir)
            if found is not None:
                return Found(found.spec, found.errors, index.broken, tuple(sorted(index.files)))
        elif known is None and index.stamp == stamp:
            return Found(None, (), index.broken, tuple(sorted(index.files)))
    if not directory.is_dir():
        return Found(None)
    full = load_all(directory, base_dir=base_dir)
    index = _Index(stamp, {app: spec.source for app, spec in full.specs.items()}, len(full.errors))
    _INDEX[directory] = index
    return Found(full.specs.get(name), (), index.broken, tuple(sorted(index.files)))


def _stamp(directory: Path) -> Stamp:
    """Name, size and mtime of the config files a full load reads (stat only, nothing parsed)."""
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix in APP_SUFFIXES)
    except OSError:
        files = []
    stamps: list[tuple[str, int, int]] = []
    for path in [*files, directory.parent / DEFAULTS_NAME]:
        try:
            st = path.stat()
        except OSError:
            continue
        stamps.append((path.name, st.st_size, st.st_mtime_ns))
    return tuple(stamps)
