"""Load app configs: YAML (safe) → defaults merged under → pydantic → hosts → cross-field checks.

Every problem of a file is collected and raised at once as ``ConfigError`` whose lines read
``file:line:col: path.to.field: expected …, got …; hint``. Valid files take the fast path
(libyaml, no position tracking); a file with problems is parsed again to place them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
import gc
from pathlib import Path
import typing
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from tars_operators.config.checks import CheckContext, run_checks
from tars_operators.config.files import YamlFile, read_yaml
from tars_operators.config.inventory import resolve_hosts
from tars_operators.config.problems import Layer, Problem, describe, display_path, render_all
from tars_operators.config.schema import AppConfig, AppInfo
from tars_operators.config.spec import AppSpec
from tars_operators.config.validation import problems_from
from tars_operators.config.yamlio import syntax_error_position, syntax_error_text
from tars_operators.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
DEFAULTS_NAME = "defaults.yaml"
APP_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadResult:
    """Every app that loaded, and every file that did not (one bad file hides no other app)."""

    specs: dict[str, AppSpec] = field(default_factory=dict)
    errors: dict[Path, ConfigError] = field(default_factory=dict)


@dataclass(frozen=True)
class _Source:
    """A parsed YAML file and the problems that stop it being used at all."""

    file: Path
    parsed: YamlFile | None
    data: dict[str, Any]
    problems: tuple[Problem, ...] = ()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while configs load.

    Loading allocates dozens of objects per host and creates no garbage cycles, yet every few
    hundred allocations the collector walked the young objects and, as the loaded specs piled
    up, the whole heap: it was half the load time of 500 apps (``bench/config_load.py``).
    Reference counting still frees everything; the collector resumes when loading ends.
    """
    if not gc.isenabled():  # paused by a caller (or another thread): leave it to them
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def default_defaults(app_file: Path) -> Path | None:
    """``defaults.yaml`` beside the apps directory (``configs/apps/x.yaml`` → ``configs/``)."""
    candidate = app_file.parent.parent / DEFAULTS_NAME
    return candidate if candidate.is_file() else None


@gc_paused()
def load_app(
    path: str | Path, defaults_path: str | Path | None = None, *, base_dir: Path | None = None
) -> AppSpec:
    """Load and validate one app config; raises ``ConfigError`` listing every problem.

    ``defaults_path`` defaults to ``defaults.yaml`` in the parent of the file's directory, if
    any. Paths in messages are shown relative to ``base_dir`` (default: the working directory).
    """
    file = Path(path).absolute()
    defaults_file = Path(defaults_path).absolute() if defaults_path else default_defaults(file)
    defaults = _read(defaults_file) if defaults_file else None
    if defaults is not None and defaults.problems:
        raise _error(defaults.problems, [_layer(defaults)], base_dir)
    return _load(file, defaults, base_dir)


def load_all(
    config_dir: str | Path, defaults_path: str | Path | None = None, *,
    base_dir: Path | None = None,
) -> LoadResult:
    """Load every ``*.yaml``/``*.yml`` in ``config_dir`` (not recursive), in name order.

    ``defaults_path`` defaults to ``defaults.yaml`` in the parent of ``config_dir``. A second
    file declaring an ``app.name`` already seen is an error of that second file.
    """
    directory = Path(config_dir).absolute()
    if not directory.is_dir():
        shown = display_path(directory, base_dir)
        return LoadResult(errors={directory: ConfigError([f"{shown}: no such directory"])})
    files = sorted(p for p in directory.iterdir() if p.suffix in APP_SUFFIXES and p.is_file())
    return load_files(files, defaults_path or _beside(directory), base_dir=base_dir)


@gc_paused()
def load_files(
    files: list[Path], defaults_path: str | Path | None = None, *, base_dir: Path | None = None
) -> LoadResult:
    """Load the given app files with one defaults file (``None``: found beside each file)."""
    result = LoadResult()
    first_seen: dict[str, Path] = {}
    cache: dict[Path | None, _Source | None] = {}
    for file in (Path(p).absolute() for p in files):
        d_file = Path(defaults_path).absolute() if defaults_path else default_defaults(file)
        if d_file not in cache:
            cache[d_file] = _read(d_file) if d_file else None
            bad = cache[d_file]
            if bad is not None and bad.problems:
                result.errors[bad.file] = _error(bad.problems, [_layer(bad)], base_dir)
        defaults = cache[d_file]
        if defaults is not None and defaults.problems:
            shown = display_path(defaults.file, base_dir)
            result.errors[file] = ConfigError(
                [f"{display_path(file, base_dir)}:1:1: not loaded: {shown} has errors"])
            continue
        try:
            spec = _load(file, defaults, base_dir)
        except ConfigError as exc:
            result.errors[file] = exc
            continue
        if spec.name in first_seen:
            shown = display_path(first_seen[spec.name], base_dir)
            problem = Problem(("app", "name"), f"app '{spec.name}' is already defined in {shown}")
            result.errors[file] = _error([problem], [_layer(_read(file))], base_dir)
            continue
        first_seen[spec.name] = file
        result.specs[spec.name] = spec
    return result


def _beside(directory: Path) -> Path | None:
    candidate = directory.parent / DEFAULTS_NAME
    return candidate if candidate.is_file() else None


def _read(file: Path, keep: bool = True) -> _Source:
    try:
        parsed = read_yaml(file, keep)
    except OSError as exc:
        return _Source(file, None, {}, (Problem((), f"cannot read file: {exc.strerror}"),))
    except UnicodeDecodeError:
        return _Source(file, None, {}, (Problem((), "expected UTF-8 text, got binary data"),))
    if parsed.error is not None:
        problem = Problem((), f"invalid YAML: {syntax_error_text(parsed.error)}",
                          pos=syntax_error_position(parsed.error))
        return _Source(file, parsed, {}, (problem,))
    data = {} if parsed.data is None else parsed.data
    if not isinstance(data, dict):
        problem = Problem((), f"expected a mapping of sections (app, artifact, hosts, …), got"
                          f" {describe(data)}")
        return _Source(file, parsed, {}, (problem,))
    return _Source(file, parsed, data)


def _layer(source: _Source, merged: bool = True) -> Layer:
    positions = source.parsed.positions() if source.parsed is not None else None
    return Layer(source.file, positions, merged)


def _error(problems: Any, layers: list[Layer], base_dir: Path | None) -> ConfigError:
    return ConfigError(render_all(problems, layers, base_dir))


def _load(file: Path, defaults: _Source | None, base_dir: Path | None) -> AppSpec:
    app = _read(file, keep=False)
    if app.problems:
        raise _error(app.problems, [_layer(app)], base_dir)
    merged = deep_merge(defaults.data, app.data) if defaults is not None else app.data
    config, valid, problems = _validate(merged)
    spec, inventory = None, None
    hosts = None
    if "hosts" in valid:
        owner = _hosts_owner(app, defaults)
        resolved = resolve_hosts(config.hosts, file, owner)
        problems += resolved.problems
        inventory = resolved.inventory_file
        if not resolved.problems:
            hosts = resolved.hosts
            # The inline host list lives on, merged with the inventory, in spec.hosts: the spec
            # keeps one copy (25,000 validated entries for 500 apps of 50 hosts cost the
            # garbage collector dearly). The checks below still see the whole config.
            slim = config.model_copy(update={"hosts": config.hosts.model_copy(update={"list": ()})})
            spec = AppSpec(slim, hosts, file, resolved.global_vars)
    partial = len(valid) < len(AppConfig.model_fields)
    problems += run_checks(CheckContext(config, valid, hosts, spec, file, partial))
    if problems or spec is None:
        layers = [_layer(app)] + ([_layer(defaults)] if defaults is not None else [])
        if inventory is not None and inventory.is_file():
            layers.append(_layer(_read(inventory), merged=False))
        raise _error(problems, layers, base_dir)
    return spec


def _hosts_owner(app: _Source, defaults: _Source | None) -> Path:
    hosts = app.data.get("hosts")
    if (isinstance(hosts, dict) and "inventory" in hosts) or defaults is None:
        return app.file
    return defaults.file


def _validate(data: dict[str, Any]) -> tuple[AppConfig, frozenset[str], list[Problem]]:
    """The config, the top-level sections that are fully valid, and the problems.

    On errors the config is partial: broken fields are absent (reading one raises
    ``AttributeError``, which skips the check), so the checks still see every valid part.
    """
    try:
        return AppConfig.model_validate(data), frozenset(AppConfig.model_fields), []
    except ValidationError as exc:
        problems = problems_from(exc, AppConfig)
        locs = [tuple(err["loc"]) for err in exc.errors()]
    partial = _partial(AppConfig, data, locs, depth=2)
    valid = frozenset(n for n in AppConfig.model_fields if n in partial.__dict__
                      and not any(loc[:1] == (n,) for loc in locs))
    if "app" not in partial.__dict__:  # checks may show the app's name
        partial.__dict__["app"] = AppInfo.model_construct(name="(invalid)", owner="")
    return partial, valid, problems


def _partial(model: type[M], data: dict[str, Any], locs: list[tuple[Any, ...]], depth: int) -> M:
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        under = [loc[1:] for loc in locs if loc[:1] == (name,)]
        if not under:
            if name in data:
                values[name] = _adapter(model, name).validate_python(data[name])
            elif not info.is_required():
                values[name] = info.get_default(call_default_factory=True)
            continue
        sub = _model_of(info.annotation)
        if depth > 1 and sub is not None and isinstance(data.get(name), dict) and all(under):
            values[name] = _partial(sub, data[name], under, depth - 1)
    made = model.model_construct(**values)
    for name in set(model.model_fields) - set(values):
        made.__dict__.pop(name, None)  # model_construct filled in a default: hide it
    return made


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for tp in (annotation, *typing.get_args(annotation)):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return tp
    return None


@lru_cache(maxsize=None)
def _adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    info = model.model_fields[name]
    annotated: Any = Annotated[info.annotation, info]  # keeps the field's constraints
    return TypeAdapter(annotated)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        below = out.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            out[key] = deep_merge(below, value)
        else:
            out[key] = value
    return out
