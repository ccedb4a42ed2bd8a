"""One way to find an app's config: the DAG file, the REST routes and ``tars plan`` agree,
and a lookup reads the app's own file, never every file per request."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi import HTTPException

from tars_operators import api
from tars_operators.cli import main
from tars_operators.config import finder, loader
from tars_operators.factory.entry import build_all
from tests.unit.config.test_loader import APP  # the same minimal app config

pytestmark = pytest.mark.unit


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty config directory, where the routes look (no index from other tests)."""
    directory = tmp_path / "configs" / "apps"
    directory.mkdir(parents=True)
    monkeypatch.setenv("TARS_CONFIG_DIR", str(directory))
    monkeypatch.setattr(finder, "_INDEX", {})
    return directory


@pytest.fixture
def apps(directory: Path) -> Path:
    (directory / "services.yaml").write_text(APP.format(name="alpha"))  # not named after it
    (directory / "beta.yaml").write_text(APP.format(name="beta"))
    (directory / "gamma.yaml").write_text(APP.format(name="gamma").replace("owner: team",
                                                                           "owner: [x]"))
    (directory / "broken.yaml").write_text("app: [\n")
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


def by_dag_file(apps: Path, name: str) -> Any:
    dags = build_all(apps, only=f"tars_deploy__{name}")
    return "found" if f"tars_deploy__{name}" in dags else "none"


def by_route(apps: Path, name: str) -> Any:
    try:
        api.load_app_spec(name)
    except HTTPException as exc:
        return {422: "broken", 404: "none"}[exc.status_code]
    return "found"


def by_cli(apps: Path, name: str, capsys: pytest.CaptureFixture[str]) -> Any:
    code = main(["plan", name, "--config-dir", str(apps), "--json"])
    err = capsys.readouterr().err
    if code == 1:
        assert "gamma.yaml:1:" in err and "app.owner: expected a string" in err, err
    return {0: "found", 1: "broken", 2: "none"}[code]


@pytest.mark.parametrize(("name", "expected"), [
    ("beta", "found"),  # in its own file
    ("alpha", "found"),  # in a file named otherwise
    ("gamma", "broken"),  # its own file has errors: they are shown, not "unknown app"
    ("delta", "none"),  # nowhere; broken.yaml hides nothing else
])
def test_the_dag_file_the_route_and_the_cli_find_the_same_config(
        apps: Path, capsys: pytest.CaptureFixture[str], name: str, expected: str) -> None:
    results = {"route": by_route(apps, name), "cli": by_cli(apps, name, capsys),
               "dag file": by_dag_file(apps, name)}
    # the DAG file builds nothing for a broken app; the full parse lists its errors instead
    assert results == {"route": expected, "cli": expected,
                       "dag file": "none" if expected == "broken" else expected}


def test_an_unknown_app_names_the_known_ones(apps: Path) -> None:
    found = finder.find_app(apps, "alpah")
    assert (found.spec, found.errors, found.known) == (None, (), ("alpha", "beta"))
    assert found.broken == 2


def test_an_app_in_its_own_file_is_read_from_that_file_alone(
        directory: Path, validated: list[str]) -> None:
    write(directory / "alpha.yaml", APP.format(name="alpha"))
    for i in range(5):
        write(directory / f"other{i}.yaml", APP.format(name=f"other{i}"))
    assert api.load_app_spec("alpha").name == "alpha"
    assert validated == ["alpha.yaml"]


def test_an_app_in_a_file_named_otherwise_is_found_once_then_read_alone(
        directory: Path, validated: list[str]) -> None:
    write(directory / "services.yaml", APP.format(name="alpha"))
    write(directory / "beta.yaml", APP.format(name="beta"))
    assert api.load_app_spec("alpha").name == "alpha"
    assert sorted(validated) == ["beta.yaml", "services.yaml"]
    validated.clear()
    write(directory / "services.yaml", APP.format(name="alpha").replace(
        "a2, address: 127.0.0.32", "a3, address: 127.0.0.33"))
    spec = api.load_app_spec("alpha")
    assert validated == ["services.yaml"]
    assert [h.name for h in spec.hosts] == ["a1", "a3"], "a cached spec went stale"


def test_an_app_without_a_config_is_404_and_unchanged_files_are_not_parsed_again(
        directory: Path, validated: list[str]) -> None:
    write(directory / "beta.yaml", APP.format(name="beta"))
    write(directory / "broken.yaml", "app: [\n")
    for _ in range(3):
        with pytest.raises(HTTPException) as caught:
            api.load_app_spec("gone")
        assert caught.value.status_code == 404
        assert caught.value.detail == (f"no config of app 'gone' in {directory}; "
                                       "1 file(s) there have errors")
    assert sorted(validated) == ["beta.yaml", "broken.yaml"], "every request parsed them all"
    write(directory / "later.yaml", APP.format(name="gone"))
    assert api.load_app_spec("gone").name == "gone"


def test_a_broken_config_named_after_the_app_is_422_with_file_line_col(
        directory: Path, validated: list[str]) -> None:
    write(directory / "alpha.yaml", APP.format(name="alpha").replace("owner: team", "owner: [x]"))
    write(directory / "beta.yaml", APP.format(name="beta"))
    with pytest.raises(HTTPException) as caught:
        api.load_app_spec("alpha")
    assert caught.value.status_code == 422
    assert "alpha.yaml:1:27: app.owner: expected a string, got a list" in caught.value.detail
    assert validated == ["alpha.yaml"]
