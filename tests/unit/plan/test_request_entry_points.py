"""One table of release requests through the three places a release is planned.

Each row is a run's conf. It goes through ``prepare``'s planning (the deploy DAG's own
``prepare`` task), ``GET /tars/apps/{app}/plan`` (the FastAPI app) and ``tars plan --json``;
all three must give the same plan, or refuse with the same message.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from airflow.api_fastapi.common.db.common import _get_session
from airflow.api_fastapi.core_api.security import get_user
from tars_operators import api
from tars_operators.cli import main
from tars_operators.config.loader import load_app
from tars_operators.errors import TarsError
from tars_operators.factory.builder import build_dag

pytestmark = pytest.mark.unit

HOSTS = ", ".join(f"{{name: web{i:02d}, address: 127.0.0.{30 + i}}}" for i in range(1, 11))
APP = """\
app: {name: NAME, owner: team}
artifact:
  url: "http://127.0.0.1:8000/x-{{ version }}.tgz"
  checksum: {url: "{{ url }}.sha256"}
  LATEST
hosts:
  list: [HOSTS]
service: {start: "run start", stop: "run stop"}
traffic: {min_in_service: "50%"}
strategy: {batches: [1, "25%", "50%"], failure_budget: {per_stage: "50%", total: 2}}
"""
LATEST_VERSION = "2.1.0"
DEFAULT = [("fort", 1), ("batch_1", 1), ("batch_2", 2), ("batch_3", 5), ("batch_4", 1)]
NO_FORT = [("batch_1", 1), ("batch_2", 2), ("batch_3", 5), ("batch_4", 2)]
BAD_CHARS = ("params.version: version {!r} is not allowed: use 1-64 characters from "
             "[0-9A-Za-z._+-], starting with a letter or digit, without '..'")
PATTERN = (r"params.version: version {!r} does not match artifact.version_pattern "
           r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?$")
BATCHES = ("params.batches: expected sizes like 1, 25%, 100% separated by commas, got {!r}")
SLOTS = ("params.batches: this plan needs the stages {} but the DAG has 5 (fort, batch_1, "
         "batch_2, batch_3, batch_4), from the app's strategy; use fewer, larger batches or "
         "change strategy.batches")

# (app, conf, expected): expected is the stages as (name, host count) and the version, or
# the refusal's message.
ROWS: list[tuple[str, dict[str, Any], Any]] = [
    # versions: as given (never trimmed), against artifact.version_pattern; latest resolved
    ("shop", {"version": "2.0.0"}, (DEFAULT, "2.0.0")),
    ("shop", {"version": "2.0.0-rc.1"}, (DEFAULT, "2.0.0-rc.1")),
    ("shop", {"version": "latest"}, (DEFAULT, LATEST_VERSION)),
    ("shop", {"version": ""}, (DEFAULT, LATEST_VERSION)),
    ("shop", {"version": "2.0"}, PATTERN.format("2.0")),
    ("shop", {"version": "2.0.0\n"}, BAD_CHARS.format("2.0.0\n")),
    ("shop", {"version": " 2.0.0"}, BAD_CHARS.format(" 2.0.0")),
    ("shop", {"version": "2.0.0; rm -rf /"}, BAD_CHARS.format("2.0.0; rm -rf /")),
    ("shop", {"version": "../2.0.0"}, BAD_CHARS.format("../2.0.0")),
    ("shop", {"version": "LATEST"}, PATTERN.format("LATEST")),
    ("bare", {"version": "latest"}, "params.version: the latest version was asked for (no "
     "version, or 'latest') but artifact.latest_url is not configured; give a version"),
    ("bare", {"version": ""}, "params.version: the latest version was asked for (no "
     "version, or 'latest') but artifact.latest_url is not configured; give a version"),
    ("bare", {"version": "1.0.0"}, ([("fort", 1), ("batch_1", 1), ("batch_2", 1), ("batch_3", 1)],
                                   "1.0.0")),
    # hosts: inventory order, empty is every host, unknown names refused with a hint
    ("shop", {"version": "2.0.0", "hosts": ["web03", "web01", "web05"]},
     ([("fort", 1), ("batch_1", 1), ("batch_2", 1)], "2.0.0")),
    ("shop", {"version": "2.0.0", "hosts": []}, (DEFAULT, "2.0.0")),
    ("shop", {"version": "2.0.0", "hosts": ["web11"]}, "unknown host(s) web11 for app 'shop' "
     "(10 hosts: web01 … web10); did you mean 'web10'?"),
    ("shop", {"version": "2.0.0", "hosts": [" ", " "]},
     "the host list is empty: name at least one host"),
    ("shop", {"version": "2.0.0", "hosts": ["web02"], "batches": "100%"},
     ([("fort", 1)], "2.0.0")),
    # batches: counts > 0 and 1..100%, the capacity floor, and the DAG's stage slots
    ("shop", {"version": "2.0.0", "batches": "1, 25%, 50%"}, (DEFAULT, "2.0.0")),
    ("shop", {"version": "2.0.0", "batches": "50%"},
     ([("fort", 1), ("batch_1", 5), ("batch_2", 4)], "2.0.0")),
    ("shop", {"version": "2.0.0", "batches": "005"},
     ([("fort", 1), ("batch_1", 5), ("batch_2", 4)], "2.0.0")),
    ("shop", {"version": "2.0.0", "batches": ""}, (DEFAULT, "2.0.0")),
    ("shop", {"version": "2.0.0", "batches": "0%"}, BATCHES.format("0%")),
    ("shop", {"version": "2.0.0", "batches": "0"}, BATCHES.format("0")),
    ("shop", {"version": "2.0.0", "batches": "1,,2"}, BATCHES.format("")),
    ("shop", {"version": "2.0.0", "batches": "lots"}, BATCHES.format("lots")),
    ("shop", {"version": "2.0.0", "batches": "10000"}, BATCHES.format("10000")),
    ("shop", {"version": "2.0.0", "batches": "101%"}, BATCHES.format("101%")),
    ("shop", {"version": "2.0.0", "batches": "100%"}, "batch_1: batch of 9 would leave 1 of 10 "
     "hosts in service; traffic.min_in_service needs 5"),
    ("shop", {"version": "2.0.0", "batches": "2"},
     SLOTS.format("fort, batch_1, batch_2, batch_3, batch_4, batch_5")),
    # skip the fort: a reason is needed; batch names then start at batch_1
    ("shop", {"version": "2.0.0", "skip_fort": True, "skip_fort_reason": "fort is down"},
     (NO_FORT, "2.0.0")),
    ("shop", {"version": "2.0.0", "skip_fort": True}, "params.skip_fort_reason: skipping the "
     "fort stage needs a reason"),
    ("shop", {"version": "2.0.0", "skip_fort": True, "skip_fort_reason": "  "},
     "params.skip_fort_reason: skipping the fort stage needs a reason"),
    ("shop", {"version": "2.0.0", "skip_fort": True, "skip_fort_reason": "x", "batches": "2"},
     SLOTS.format("batch_1, batch_2, batch_3, batch_4, batch_5")),
    ("shop", {"version": "2.0.0", "skip_fort": True, "skip_fort_reason": "x", "batches": "2",
              "hosts": ["web01", "web02", "web03", "web04"]},
     ([("batch_1", 2), ("batch_2", 2)], "2.0.0")),
    # force: a reason is needed; reason and ticket are kept, trimmed
    ("shop", {"version": "2.0.0", "force": True, "force_reason": "hotfix"}, (DEFAULT, "2.0.0")),
    ("shop", {"version": "2.0.0", "force": True}, "params.force_reason: forcing past a window or "
     "freeze needs a reason"),
    ("shop", {"version": "2.0.0", "reason": " new checkout ", "ticket": "OPS-1"},
     (DEFAULT, "2.0.0")),
    # the first refusal wins, and latest is resolved only once everything else passed
    ("shop", {"version": "latest", "batches": "0%"}, BATCHES.format("0%")),
    ("shop", {"version": "2.0", "batches": "0%"}, PATTERN.format("2.0")),
]


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("request")
    latest = root / "latest.txt"
    latest.write_text(f"{LATEST_VERSION}\n")
    apps = root / "configs" / "apps"
    apps.mkdir(parents=True)
    shop = APP.replace("LATEST", f'latest_url: "file://{latest}"').replace("HOSTS", HOSTS)
    (apps / "shop.yaml").write_text(shop.replace("NAME", "shop"))
    bare = APP.replace("LATEST", "").replace("HOSTS", HOSTS.rsplit(", {name: web05", 1)[0])
    (apps / "bare.yaml").write_text(bare.replace("NAME", "bare").replace('"50%"}', "0}"))
    return apps


@pytest.fixture
def client(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The plan route with Airflow's login, session and permission check stood in."""
    monkeypatch.setenv("TARS_CONFIG_DIR", str(config_dir))
    monkeypatch.setattr(api, "_known_app", lambda *args: None)
    api.app.dependency_overrides[get_user] = lambda: SimpleNamespace(get_name=lambda: "ann")
    api.app.dependency_overrides[_get_session] = lambda: None
    try:
        yield TestClient(api.app)
    finally:
        api.app.dependency_overrides.pop(get_user, None)
        api.app.dependency_overrides.pop(_get_session, None)


def by_prepare(config_dir: Path, app: str, conf: dict[str, Any]) -> dict[str, Any] | str:
    """The deploy DAG's ``prepare`` task plans the run from its conf and the form's defaults."""
    spec = load_app(config_dir / f"{app}.yaml")
    dag = build_dag(spec)
    defaults = {k: v for k, v in dag.params.dump().items() if k != "version"}
    run = SimpleNamespace(conf=conf, dag_id=dag.dag_id, run_id="manual__1", run_type="manual",
                          triggering_user_name="ann")
    try:
        plan = dag.get_task("prepare")._plan(spec, {"dag_run": run, "params": {**defaults, **conf}})
    except TarsError as exc:
        return str(exc)
    return dict(plan.to_dict())


def by_route(client: TestClient, app: str, conf: dict[str, Any]) -> dict[str, Any] | str:
    query = {k: ",".join(v) if isinstance(v, list) else str(v).lower() if isinstance(v, bool)
             else v for k, v in conf.items()}
    response = client.get(f"/apps/{app}/plan", params=query)
    if response.status_code == 400:
        return str(response.json()["detail"])
    assert response.status_code == 200, response.text
    return dict(response.json()["plan"])


def by_cli(config_dir: Path, app: str, conf: dict[str, Any],
           capsys: pytest.CaptureFixture[str]) -> dict[str, Any] | str:
    args = ["plan", app, "--config-dir", str(config_dir), "--json"]
    for key, value in conf.items():
        if key in ("skip_fort", "force"):
            args += [f"--{key.replace('_', '-')}", conf.get(f"{key}_reason", "")]
        elif not key.endswith("_reason"):
            args += [f"--{key}", ",".join(value) if isinstance(value, list) else value]
    code = main(args)
    out, err = capsys.readouterr()
    if code == 2:
        assert err.startswith("tars plan: "), err
        return err.strip().removeprefix("tars plan: ")
    assert code == 0, err
    return dict(json.loads(out)["plan"])


@pytest.mark.parametrize(("app", "conf", "expected"), ROWS,
                         ids=[f"{app}-{json.dumps(conf)}" for app, conf, _ in ROWS])
def test_prepare_the_plan_route_and_tars_plan_agree(
        config_dir: Path, client: TestClient, capsys: pytest.CaptureFixture[str],
        app: str, conf: dict[str, Any], expected: Any) -> None:
    results = {"prepare": by_prepare(config_dir, app, conf),
               "route": by_route(client, app, conf),
               "cli": by_cli(config_dir, app, conf, capsys)}
    if isinstance(expected, str):
        assert results == {name: expected for name in results}
        return
    for plan in results.values():
        assert isinstance(plan, dict), results
        plan.pop("who")  # the person asking: the run's user, the route's user, none for the CLI
    assert results["route"] == results["prepare"] == results["cli"]
    plan = results["prepare"]
    stages, version = expected
    assert ([(s["name"], len(s["hosts"])) for s in plan["stages"]], plan["version"]) == (
        stages, version)
    assert plan["forced"] == conf.get("force_reason", "")
    assert plan["skip_fort"] == conf.get("skip_fort_reason", "").strip()
    assert (plan["reason"], plan["ticket"]) == (conf.get("reason", "").strip(),
                                                conf.get("ticket", ""))


def test_the_table_covers_at_least_30_requests_good_and_bad() -> None:
    refused = [row for row in ROWS if isinstance(row[2], str)]
    assert len(ROWS) >= 30 and 10 <= len(refused) <= len(ROWS) - 10
