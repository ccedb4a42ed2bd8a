"""The plan route's config lookup: it reads the app's own file, never every file per request."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Iterator

import pytest
from fastapi import HTTPException

from tars_operators import api
from tars_operators.config import finder, loader
from tests.unit.config.test_loader import APP  # the same minimal app config

pytestmark = pytest.mark.unit


@pytest.fixture
def apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "configs" / "apps"
    directory.mkdir(parents=True)
    monkeypatch.setenv("TARS_CONFIG_DIR", str(directory))
    monkeypatch.setattr(finder, "_INDEX", {})
    return directory


@pytest.fixture
def validated(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names of the app files the loader validates (each a full parse + validation)."""
    seen: list[str] = []
    real = loader._load

    def spy(file: Path, *args: object, **kwargs: object) -> object:
        seen.append(file.name)
        return real(file, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loader, "_load", spy)
    yield seen


def write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text))


def test_an_app_in_its_own_file_is_read_from_that_file_alone(apps: Path, validated: list[str]) -> None:
    write(apps / "alpha.yaml", APP.format(name="alpha"))
    for i in range(5):
        write(apps / f"other{i}.yaml", APP.format(name=f"other{i}"))
    assert api.load_app_spec("alpha").name == "alpha"
    assert validated == ["alpha.yaml"]


def test_an_app_in_a_file_named_otherwise_is_found_once_then_read_alone(
        apps: Path, validated: list[str]) -> None:
    write(apps / "services.yaml", APP.format(name="alpha"))
    write(apps / "beta.yaml", APP.format(name="beta"))
    assert api.load_app_spec("alpha").name == "alpha"
    assert sorted(validated) == ["beta.yaml", "services.yaml"]
    validated.clear()
    write(apps / "services.yaml", APP.format(name="alpha").replace("a2, address: 127.0.0.32",
                                                                   "a3, address: 127.0.0.33"))
    spec = api.load_app_spec("alpha")
    assert validated == ["services.yaml"]
    assert [h.name for h in spec.hosts] == ["a1", "a3"], "a cached spec went stale"


def test_an_app_without_a_config_is_404_and_unchanged_files_are_not_parsed_again(
        apps: Path, validated: list[str]) -> None:
    write(apps / "beta.yaml", APP.format(name="beta"))
    write(apps / "broken.yaml", "app: [\n")
    for _ in range(3):
        with pytest.raises(HTTPException) as caught:
            api.load_app_spec("gone")
        assert caught.value.status_code == 404
        assert caught.value.detail == (f"no config of app 'gone' in {apps}; "
                                       "1 file(s) there have errors")
    assert sorted(validated) == ["beta.yaml", "broken.yaml"], "every request parsed them all"
    write(apps / "later.yaml", APP.format(name="gone"))
    assert api.load_app_spec("gone").name == "gone"


def test_a_broken_config_named_after_the_app_is_422_with_file_line_col(
        apps: Path, validated: list[str]) -> None:
    write(apps / "alpha.yaml", APP.format(name="alpha").replace("owner: team", "owner: [x]"))
    write(apps / "beta.yaml", APP.format(name="beta"))
    with pytest.raises(HTTPException) as caught:
        api.load_app_spec("alpha")
    assert caught.value.status_code == 422
    assert "alpha.yaml:1:27: app.owner: expected a string, got a list" in caught.value.detail
    assert validated == ["alpha.yaml"]
