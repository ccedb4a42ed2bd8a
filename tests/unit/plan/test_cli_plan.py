"""``tars plan``: the table, the JSON, and exit 2 for what cannot be planned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tars_operators.cli import main

pytestmark = pytest.mark.unit

APP = """\
app: {name: shop, owner: team}
artifact: {url: "http://127.0.0.1:8000/x-{{ version }}.tgz", checksum: {url: "{{ url }}.sha256"}}
hosts:
  list: [HOSTS]
service: {start: "run start", stop: "run stop"}
traffic: {min_in_service: "50%"}
strategy: {batches: [1, "25%", "50%"], failure_budget: {per_stage: "50%", total: 2}}
schedule: {timezone: UTC, freezes: [{start: "2000-01-01", end: "2000-01-02", reason: y2k}]}
"""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    apps = tmp_path / "apps"
    apps.mkdir()
    hosts = ", ".join(f"{{name: web{i:02d}, address: 127.0.0.{30 + i}}}" for i in range(1, 11))
    (apps / "shop.yaml").write_text(APP.replace("HOSTS", hosts))
    (apps / "broken.yaml").write_text("app: {name: broken, owner: team}\n")
    return apps


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_table(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "shop", "--config-dir", str(config_dir), "--version", "2.0.0")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("app shop  version 2.0.0  (10 hosts, ")
    assert lines[2:8] == [
        "stage      hosts budget  names",
        "fort           1      0  web01",
        "batch_1        1      0  web02",
        "batch_2        2      1  web03, web04",
        "batch_3        5      2  web05, web06, web07, web08, web09",
        "batch_4        1      0  web10",
    ]
    assert "failure budget: 2 host(s) in the release (total: 2, per stage: 50%); on failure: rollback" in lines
    assert "min in service: 5 of 10 hosts (traffic.min_in_service: 50%)" in lines
    assert "windows (UTC): none (always open)" in lines
    assert "  OPEN now: no deploy windows: always open" in lines
    assert "  freeze 2000-01-01 to 2000-01-02 (y2k)" in lines


def test_plan_json_with_overrides(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "shop", "--config-dir", str(config_dir), "--hosts", "web03,web01,web05",
                       "--batches", "1,100%", "--skip-fort", "fort host is down", "--json")
    assert code == 0
    data = json.loads(out)
    assert [(s["name"], s["hosts"]) for s in data["plan"]["stages"]] == [
        ("batch_1", ["web01"]), ("batch_2", ["web03", "web05"])]
    assert data["plan"]["min_in_service"] == 5 and data["plan"]["budget_total"] == 2
    assert data["schedule"]["open"] is True and data["schedule"]["next_open"] is None


@pytest.mark.parametrize(("args", "message"), [
    (["--batches", "1,8"], "tars plan: batch_2: batch of 8 would leave 2 of 10 hosts in service;"
     " traffic.min_in_service needs 5"),
    (["--hosts", "web01,web11"], "tars plan: unknown host(s) web11 for app 'shop' (10 hosts: web01 …"
     " web10); did you mean 'web10'?"),
    (["--hosts", ","], "tars plan: the host list is empty: name at least one host"),
    (["--batches", "1,lots"], "tars plan: params.batches: expected sizes like 1, 25%, 100% "
     "separated by commas, got 'lots'"),
    # what prepare refuses, `tars plan` refuses: a 0% batch, a version with a newline
    (["--batches", "0%,50%"], "tars plan: params.batches: expected sizes like 1, 25%, 100% "
     "separated by commas, got '0%'"),
    (["--version", "2.0"], "tars plan: params.version: version '2.0' does not match artifact.version_pattern"
     r" ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?$"),
    (["--version", "2.0.0\n"], "tars plan: params.version: version '2.0.0\\n' is not allowed: use 1-64 "
     "characters from [0-9A-Za-z._+-], starting with a letter or digit, without '..'"),
])
def test_plan_errors_exit_2(config_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                            message: str) -> None:
    code, out, err = run(capsys, "shop", "--config-dir", str(config_dir), *args)
    assert (code, out, err.strip()) == (2, "", message)


def test_plan_unknown_app_exits_2(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "shops", "--config-dir", str(config_dir))
    assert code == 2
    assert err.strip().endswith("(apps: shop); did you mean 'shop'?")


def test_plan_of_a_broken_config_shows_its_errors(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "broken", "--config-dir", str(config_dir))
    assert code == 1
    assert "broken.yaml:1:1: artifact: required field missing" in err
