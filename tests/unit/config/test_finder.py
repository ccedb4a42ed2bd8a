"""One way to find an app's config: the DAG file, the plan route and ``tars plan`` agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import HTTPException

from tars_operators import api
from tars_operators.cli import main
from tars_operators.config import finder
from tars_operators.factory.entry import build_all
from tests.unit.config.test_loader import APP  # the same minimal app config

pytestmark = pytest.mark.unit


@pytest.fixture
def apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "configs" / "apps"
    directory.mkdir(parents=True)
    monkeypatch.setenv("TARS_CONFIG_DIR", str(directory))
    monkeypatch.setattr(finder, "_INDEX", {})
    (directory / "services.yaml").write_text(APP.format(name="alpha"))  # not named after it
    (directory / "beta.yaml").write_text(APP.format(name="beta"))
    (directory / "gamma.yaml").write_text(APP.format(name="gamma").replace("owner: team",
                                                                           "owner: [x]"))
    (directory / "broken.yaml").write_text("app: [\n")
    return directory


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
