"""``tars lint`` and ``tars schema``, through ``main()`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tars_operators.cli import COMMANDS, main

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
GOOD = """\
app: {name: NAME, owner: team}
artifact: {url: "http://127.0.0.1:8000/x-{{ version }}.tgz", checksum: {url: "{{ url }}.sha256"}}
hosts: {list: [{name: a1, address: 127.0.0.31}, {name: a2, address: 127.0.0.32}]}
service: {start: "run start", stop: "run stop"}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "configs/apps").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TARS_CONFIG_DIR", raising=False)
    return tmp_path


def test_lint_defaults_to_configs_apps_and_prints_one_ok_line_per_app(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("alpha", "beta"):
        (workdir / f"configs/apps/{name}.yaml").write_text(GOOD.replace("NAME", name))
    assert main(["lint"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "OK alpha: configs/apps/alpha.yaml (2 hosts; fort 1, batch_1 1)",
        "OK beta: configs/apps/beta.yaml (2 hosts; fort 1, batch_1 1)",
    ]


def test_lint_reports_every_error_of_every_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    apps = workdir / "configs/apps"
    (apps / "a.yaml").write_text(GOOD.replace("NAME", "alpha"))
    (apps / "b.yaml").write_text(GOOD.replace("NAME", "Beta").replace("team", "[]"))
    (apps / "c.yaml").write_text("app: [\n")
    assert main(["lint", "configs/apps", "configs/nope.yaml"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "configs/nope.yaml: no such file or directory",
        "configs/apps/b.yaml:1:13: app.name: expected a name of lowercase letters, digits and '_'"
        " that starts with a letter (at most 63 characters), got 'Beta'; did you mean 'beta'?",
        "configs/apps/b.yaml:1:26: app.owner: expected a string, got a list",
        "configs/apps/c.yaml:2:1: invalid YAML: expected the node content, but found '<stream end>'"
        " (while parsing a flow node started at line 2)",
        "OK alpha: configs/apps/a.yaml (2 hosts; fort 1, batch_1 1)",
        "2 of 3 file(s) have errors",
    ]


def test_lint_of_nothing_fails(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint"]) == 1
    assert "no app configs" in capsys.readouterr().out


def test_lint_of_the_repo_example(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert main(["lint", "configs/examples/full.yaml"]) == 0
    assert capsys.readouterr().out.startswith("OK shop: configs/examples/full.yaml (4 hosts;")


def test_schema_prints_the_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "Tars app config"
    assert set(schema["required"]) == {"app", "artifact", "hosts", "service"}
    assert schema["additionalProperties"] is False


def test_every_subcommand_is_a_registered_function() -> None:
    assert {"lint", "plan", "schema"} <= set(COMMANDS)
    assert all(callable(cmd.run) for cmd in COMMANDS.values())
