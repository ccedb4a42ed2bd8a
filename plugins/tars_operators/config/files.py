"""YAML files read once: parsed data cached by path, mtime and size.

In memory, shared files (``defaults.yaml``, inventories) are kept: parsed once per process. On disk,
the parsed data of every config file is kept as JSON (never pickle: a cache must not be able
to run code) so that the DAG processor, which parses the DAG file in a fresh process every
cycle, does not parse hundreds of unchanged YAML files each time. ``TARS_CONFIG_CACHE_DIR`` moves
the disk cache, else ``$TARS_CACHE_DIR/yaml`` (default ``$XDG_CACHE_HOME/tars/yaml`` or
``~/.cache/tars/yaml``); ``off`` in either disables it. The artifact cache is separate
(``hooks.artifacts.default_cache_dir``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tars_operators.config.yamlio import Positions, parse_fast, parse_with_positions

_CACHE: dict[Path, tuple[tuple[int, int, int], YamlFile]] = {}
_CACHE_LIMIT = 4096
_FORMAT = f"tars-yaml-1/pyyaml-{yaml.__version__}"


@dataclass
class YamlFile:
    """One parsed YAML file: its data, or the syntax error that stopped the parser."""

    path: Path
    text: str | None  # None when the data came from the disk cache (read on demand)
    data: Any = None
    error: yaml.YAMLError | None = None
    _positions: Positions | None = field(default=None, repr=False)

    def positions(self) -> Positions:
        """Line/column of every key (parsed again, slowly, only when an error needs them)."""
        if self._positions is None:
            text = self.text if self.text is not None else self.path.read_text(encoding="utf-8")
            try:
                self._positions = parse_with_positions(text)[1]
            except yaml.YAMLError:
                self._positions = Positions({})
        return self._positions


def read_yaml(path: Path, keep: bool = True) -> YamlFile:
    """Read and parse ``path``; raises ``OSError`` if it cannot be read.

    A syntax error is kept in ``error`` (from the pure-Python parser, whose messages are the
    same on every machine) rather than raised, so callers can report it with the others.
    ``keep=False`` leaves the result out of the memory cache: for a file read once per load
    (an app's own config), whose data would only weigh on the garbage collector.
    """
    stat = os.stat(path)
    key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    hit = _CACHE.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    parsed = _from_disk(path, key) or _parse(path, key)
    if not keep:
        return parsed
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.clear()
    _CACHE[path] = (key, parsed)
    return parsed


def clear_cache() -> None:
    """Forget every file cached in memory (the disk cache checks mtimes by itself)."""
    _CACHE.clear()


def _parse(path: Path, key: tuple[int, int, int]) -> YamlFile:
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
            return parsed
    _to_disk(path, key, parsed.data)
    return parsed


OFF = ("", "off", "0")


def cache_dir() -> Path | None:
    """Where parsed YAML is kept on disk, or None when disabled."""
    own = os.environ.get("TARS_CONFIG_CACHE_DIR")
    if own is not None:
        return None if own in OFF else Path(own)
    shared = os.environ.get("TARS_CACHE_DIR")
    if shared is not None:  # the base of both caches; "off" keeps meaning "no YAML cache"
        return None if shared in OFF else Path(shared) / "yaml"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tars" / "yaml"


def _entry(path: Path) -> Path | None:
    directory = cache_dir()
    if directory is None:
        return None
    return directory / (hashlib.sha1(str(path).encode()).hexdigest() + ".json")


def _from_disk(path: Path, key: tuple[int, int, int]) -> YamlFile | None:
    entry = _entry(path)
    try:
        if entry is None:
            return None
        with open(entry, encoding="utf-8") as handle:
            stored = json.load(handle)
    except (OSError, ValueError):
        return None
    if stored.get("format") != _FORMAT or stored.get("path") != str(path):
        return None
    if stored.get("key") != list(key):
        return None
    return YamlFile(path, None, stored["data"])


def _to_disk(path: Path, key: tuple[int, int, int], data: Any) -> None:
    entry = _entry(path)
    if entry is None or not _json_safe(data):
        return
    record = {"format": _FORMAT, "path": str(path), "key": list(key), "data": data}
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, separators=(",", ":"))
        os.replace(tmp, entry)  # atomic: concurrent readers see the old or the new entry
    except OSError:
        return  # a read-only home is fine: the cache is only an optimisation


def _json_safe(value: Any) -> bool:
    """True when JSON gives back exactly ``value`` (no dates, sets, non-string keys, …)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return value == value and value not in (float("inf"), float("-inf"))
    if kind is list:
        return all(_json_safe(item) for item in value)
    if kind is dict:
        return all(type(k) is str and _json_safe(v) for k, v in value.items())
    return False
