"""Input the client refuses with exit 2 — before a run exists, mostly before any request."""

from __future__ import annotations

import json

import pytest

from tests.unit.client.conftest import FakeAirflow, form
from tests.unit.client.test_commands import run

pytestmark = pytest.mark.unit

ZERO_BATCH = "tars deploy: params.batches: expected sizes like 1, 25%, 100% separated by " \
             "commas, got '0%'"


@pytest.mark.parametrize(("argv", "message"), [
    (["--batches", "0%,50%"], ZERO_BATCH),
    (["--batches", "1,,2"], ZERO_BATCH.replace("'0%'", "''")),
    (["--batches", "1,101%"], ZERO_BATCH.replace("'0%'", "'101%'")),
    (["--force", " "], "tars deploy: --force needs a reason (it is recorded in the run note and "
                       "the audit trail)"),
    (["--skip-fort", ""], "tars deploy: --skip-fort needs a reason (it is recorded in the run "
                          "note and the audit trail)"),
])
def test_what_prepare_would_refuse_exits_2_before_any_request(
        fake: FakeAirflow, capsys, argv: list[str], message: str) -> None:
    code, out, err = run(capsys, "deploy", "demo", "2.0.0", *argv)
    assert (code, out, err.strip()) == (2, "", message)
    assert fake.requests == []  # not even a login


@pytest.mark.parametrize("version", ["2.0.0\n", " 2.0.0", "2.0.0 ", "2.0.0;id", "../2.0.0"])
def test_a_version_with_whitespace_or_tricks_exits_2(fake: FakeAirflow, capsys,
                                                     version: str) -> None:
    code, _, err = run(capsys, "deploy", "demo", version)
    assert code == 2
    assert err.startswith(f"tars deploy: version {version!r} is not allowed: use 1-64 characters")
    assert fake.requests == []


@pytest.mark.parametrize("argv", [
    ["deploy", "demoo", "2.0.0"], ["status", "demoo"], ["approve", "demoo"],
    ["brake", "demoo", "--reason", "x"], ["release-brake", "demoo"],
    ["rollback", "demoo", "--reason", "x"],
])
def test_an_unknown_app_exits_2_naming_it_and_the_known_apps(fake: FakeAirflow, capsys,
                                                            argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2, out
    assert err.startswith(f"tars {argv[0]}: unknown app 'demoo': Airflow has no DAG "
                          "tars_deploy__demoo (apps: demo, shop); did you mean 'demo'?")
    assert fake.brake is None
    assert [r for r in fake.requests if r.method != "GET" and r.url.path != "/auth/token"] == []


def test_an_unknown_app_among_none_says_none(fake: FakeAirflow, capsys) -> None:
    fake.dags = {}
    code, _, err = run(capsys, "brake", "x", "--reason", "r")
    assert code == 2 and "unknown app 'x': Airflow has no DAG tars_deploy__x (apps: none). " in err


def test_a_key_the_dags_form_lacks_is_refused_before_the_trigger(fake: FakeAirflow,
                                                                 capsys) -> None:
    """A client newer than the DAG (here: a form without dry_run) says so instead of running."""
    fake.dags["tars_deploy__demo"]["params"] = form("version", "reason", "ticket")
    code, _, err = run(capsys, "deploy", "demo", "2.0.0", "--dry-run")
    assert code == 2
    assert err.strip() == ("tars deploy: conf: unknown key 'dry_run'; tars_deploy__demo knows: "
                           "reason, ticket, version")
    assert fake.calls("POST", r".*/dagRuns") == []
    fake.dags["tars_rollback__demo"]["params"] = form("reason")
    code, _, err = run(capsys, "rollback", "demo", "--reason", "r", "--hosts", "host01")
    assert code == 2 and "conf: unknown keys 'hosts', 'ticket'; tars_rollback__demo knows" in err


def test_the_api_servers_400_is_shown_and_exits_2(fake: FakeAirflow, capsys) -> None:
    fake.trigger_error = (400, "conf: unknown key 'dryrun' (did you mean 'dry_run'?); "
                               "tars_deploy__demo knows: dry_run, version")
    code, _, err = run(capsys, "deploy", "demo", "2.0.0")
    assert code == 2
    assert "400: conf: unknown key 'dryrun' (did you mean 'dry_run'?)" in err


def test_good_input_still_triggers(fake: FakeAirflow, capsys) -> None:
    code, out, _ = run(capsys, "deploy", "demo", "latest", "--batches", "1, 50%", "--dry-run")
    assert code == 0, out
    conf = json.loads(fake.calls("POST", r".*/dagRuns")[0].content)["conf"]
    assert conf == {"version": "latest", "batches": "1, 50%", "dry_run": True}
