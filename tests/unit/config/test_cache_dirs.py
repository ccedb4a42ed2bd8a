"""The YAML parse cache and the artifact cache are two settings: TARS_CONFIG_CACHE_DIR and
TARS_ARTIFACT_CACHE_DIR, with TARS_CACHE_DIR as the base of both (``yaml/``, ``artifacts/``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest

from tars_operators.config import files
from tars_operators.config.loader import load_app
from tars_operators.config.schema import AppConfig
from tars_operators.config.spec import AppSpec
from tars_operators.hooks.artifacts import fetch_artifact

pytestmark = pytest.mark.unit
APP = """\
app: {name: alpha, owner: team}
artifact:
  url: "http://127.0.0.1:8000/alpha-{{ version }}.tar.gz"
  checksum: {url: "{{ url }}.sha256"}
hosts:
  list:
    - {name: a1, address: 127.0.0.31}
    - {name: a2, address: 127.0.0.32}
service: {start: "run start", stop: "run stop"}
"""
VARS = ("TARS_CACHE_DIR", "TARS_CONFIG_CACHE_DIR", "TARS_ARTIFACT_CACHE_DIR", "AIRFLOW_HOME",
        "XDG_CACHE_HOME")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    files.clear_cache()
    yield monkeypatch
    files.clear_cache()


def load_and_fetch(tmp_path: Path) -> None:
    """What a DAG processor and a fetch task do: parse an app file, download an artifact."""
    app = tmp_path / "apps" / "alpha.yaml"
    app.parent.mkdir(exist_ok=True)
    app.write_text(APP)
    files.clear_cache()
    assert load_app(app).name == "alpha"
    (tmp_path / "alpha-1.0.0.tar.gz").write_bytes(b"release bytes")
    sha = hashlib.sha256(b"release bytes").hexdigest()
    raw = {"app": {"name": "alpha", "owner": "t"},
           "artifact": {"url": "file://{{ vars.base }}/alpha-{{ version }}.tar.gz",
                        "checksum": {"sha256": {"1.0.0": sha}}},
           "hosts": {}, "service": {"start": "true", "stop": "true"}}
    spec = AppSpec(AppConfig.model_validate(raw), (), app, MappingProxyType({"base": str(tmp_path)}))
    assert fetch_artifact(spec, "1.0.0").path is not None


def contents(directory: Path) -> set[str]:
    return {p.suffix for p in directory.iterdir()} if directory.exists() else set()


def test_tars_cache_dir_is_the_base_of_two_separate_caches(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("TARS_CACHE_DIR", str(tmp_path / "cache"))
    load_and_fetch(tmp_path)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["artifacts", "yaml"]
    assert contents(tmp_path / "cache" / "yaml") == {".json"}
    assert contents(tmp_path / "cache" / "artifacts") == {".gz"}


def test_each_cache_has_its_own_setting(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("TARS_CACHE_DIR", str(tmp_path / "base"))
    env.setenv("TARS_CONFIG_CACHE_DIR", str(tmp_path / "parsed"))
    env.setenv("TARS_ARTIFACT_CACHE_DIR", str(tmp_path / "tarballs"))
    load_and_fetch(tmp_path)
    assert contents(tmp_path / "parsed") == {".json"} and contents(tmp_path / "tarballs") == {".gz"}
    assert not (tmp_path / "base").exists()


def test_off_turns_off_the_yaml_cache_only(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("TARS_CACHE_DIR", "off")
    env.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    load_and_fetch(tmp_path)
    assert files.cache_dir() is None and not (tmp_path / "off").exists()
    assert contents(tmp_path / "airflow" / "tars-cache") == {".gz"}
    env.delenv("TARS_CACHE_DIR")
    env.setenv("TARS_CONFIG_CACHE_DIR", "off")
    load_and_fetch(tmp_path)
    assert files.cache_dir() is None and not (tmp_path / "off").exists()


def test_defaults_keep_them_apart(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    load_and_fetch(tmp_path)
    cache = tmp_path / "home" / ".cache" / "tars"
    assert contents(cache / "yaml") == {".json"} and contents(cache / "artifacts") == {".gz"}
