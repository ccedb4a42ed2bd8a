"""``tars deploy|status|approve|brake|release-brake|rollback`` against a fake Airflow API."""

from __future__ import annotations

import json
import re

import pytest

from tars_operators.cli import build_parser, main
from tests.unit.client.conftest import FakeAirflow, ti

pytestmark = pytest.mark.unit

RUNNING = ({"state": "running", "note": "planned: 2 hosts → 2.0.0 (fort: 1, batch_1: 1)"},
           [ti("prepare", "success"), ti("fort.release", "running", 0)])
FORT_DONE = ({"state": "running", "note": "fort · 1/2 hosts on 2.0.0 · 0 failed (budget 0)"},
             [ti("prepare", "success"), ti("fort.release", "success", 0),
              ti("batch_1.release", "running", 0)])
SUCCESS = ({"state": "success", "note": "succeeded · 2/2 hosts on 2.0.0 · 0 failed (budget 0)"},
           [ti("prepare", "success"), ti("fort.release", "success", 0),
            ti("batch_1.release", "success", 0), ti("finalize", "success")])
ROLLED_BACK = ({"state": "failed", "note": "rolled back: fort: 1 host(s) failed (host01); over "
                "the stage budget 0\n\nby **ci**"},
               [ti("fort.release", "failed", 0), ti("rollback.hosts", "success", 0),
                ti("rollback.report", "failed")])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_parser_knows_every_command() -> None:
    from tars_operators.cli import _load_extensions

    _load_extensions()
    args = build_parser().parse_args(
        ["deploy", "demo", "2.0.0", "--wait", "--hosts", "host01,host02", "--batches", "1,50%",
         "--force", "hotfix", "--reason", "r", "--ticket", "OPS-1"])
    assert (args.app, args.version, args.wait, args.force) == ("demo", "2.0.0", True, "hotfix")
    for argv in (["status", "demo"], ["approve", "demo", "run1", "--reject"],
                 ["brake", "demo", "--reason", "x", "--rollback"], ["release-brake", "demo"],
                 ["rollback", "demo", "--reason", "x", "--wait"]):
        assert build_parser().parse_args(argv).handler is not None


def test_missing_reason_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["brake", "demo"])
    assert exc.value.code == 2
    assert "--reason" in capsys.readouterr().err


def test_deploy_wait_success_prints_stages_and_exits_0(fake: FakeAirflow, capsys) -> None:
    fake.steps = [RUNNING, FORT_DONE, SUCCESS]
    code, out, _ = run(capsys, "deploy", "demo", "2.0.0", "--wait", "--poll", "0",
                       "--reason", "ci", "--ticket", "OPS-1", "--hosts", "host01, host02")
    assert code == 0, out
    conf = json.loads(fake.calls("POST", r".*/dagRuns")[0].content)
    # The run id names the version, so Airflow's runs list shows what each run released.
    assert re.fullmatch(r"release__2\.0\.0__20\d\d-[0-9T:.-]+\+00:00", conf.pop("dag_run_id"))
    assert conf == {"logical_date": None, "conf": {
        "version": "2.0.0", "reason": "ci", "ticket": "OPS-1", "hosts": ["host01", "host02"]}}
    lines = [line.split("] ", 1)[1] for line in out.splitlines()]
    assert lines[0].startswith("plan: 2 stage(s) (fort 1, batch_1 1) → 2.0.0")
    assert lines[1].startswith("triggered tars_deploy__demo run manual__1: "
                               "http://airflow.test:8080/dags/tars_deploy__demo/runs/manual__1")
    assert "fort: 0/1 host(s) done, 1 in progress" in lines
    assert "fort: 1/1 host(s) done" in lines
    assert "batch_1: 1/1 host(s) done" in lines
    assert lines[-1] == "success: succeeded · 2/2 hosts on 2.0.0 · 0 failed (budget 0)"


def test_deploy_rolled_back_exits_1_with_the_reason(fake: FakeAirflow, capsys) -> None:
    fake.steps = [RUNNING, ROLLED_BACK]
    code, out, _ = run(capsys, "deploy", "demo", "2.0.0-broken", "--wait", "--poll", "0")
    assert code == 1
    assert out.splitlines()[-1].endswith(
        "failed: rolled back: fort: 1 host(s) failed (host01); over the stage budget 0")
    assert "rollback: 1/1 host(s) done" in out


def test_bad_version_exits_2_before_anything_is_triggered(fake: FakeAirflow, capsys) -> None:
    fake.plan_error = "version 'nope!' is not allowed: use 1-64 characters from [0-9A-Za-z._+-]"
    code, out, err = run(capsys, "deploy", "demo", "nope!", "--wait")
    assert code == 2
    assert "version 'nope!' is not allowed" in err
    assert fake.calls("POST", r".*/dagRuns") == []


def test_trigger_refused_by_the_params_exits_2(fake: FakeAirflow, capsys) -> None:
    fake.trigger_error = (400, "Invalid input for param hosts: 'host99' is not one of ['host01']")
    code, _, err = run(capsys, "deploy", "demo", "2.0.0", "--hosts", "host99")
    assert code == 2
    assert "400: Invalid input for param hosts: 'host99' is not one of" in err


def test_bad_credentials_exit_2(fake: FakeAirflow, capsys) -> None:
    fake.login_error = True
    code, _, err = run(capsys, "deploy", "demo", "2.0.0")
    assert code == 2
    assert "login as 'ci' refused (401): Invalid credentials" in err
    assert "TARS_AIRFLOW_TOKEN" in err


def test_a_token_from_the_environment_skips_the_login(fake: FakeAirflow, monkeypatch,
                                                     capsys) -> None:
    monkeypatch.setenv("TARS_AIRFLOW_TOKEN", "jwt")
    monkeypatch.delenv("TARS_AIRFLOW_USER")
    code, _, _ = run(capsys, "deploy", "demo", "2.0.0")
    assert code == 0
    assert fake.calls("POST", "/auth/token") == []
    monkeypatch.setenv("TARS_AIRFLOW_TOKEN", "expired")
    code, _, err = run(capsys, "deploy", "demo", "2.0.0")
    assert code == 2 and "not allowed (401)" in err


def test_no_url_exits_2(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("TARS_AIRFLOW_URL", raising=False)
    code, _, err = run(capsys, "status", "demo")
    assert code == 2 and "TARS_AIRFLOW_URL is not set" in err


def test_paused_dag_says_how_to_unpause(fake: FakeAirflow, capsys) -> None:
    fake.dags["tars_deploy__demo"]["is_paused"] = True
    code, _, err = run(capsys, "deploy", "demo", "2.0.0")
    assert code == 2
    assert "tars_deploy__demo is paused" in err and '{"is_paused": false}' in err
    assert "--unpause" in err
    assert fake.calls("POST", r".*/dagRuns") == []


def test_unpause_then_deploy(fake: FakeAirflow, capsys) -> None:
    fake.dags["tars_deploy__demo"]["is_paused"] = True
    code, out, _ = run(capsys, "deploy", "demo", "2.0.0", "--unpause")
    assert code == 0 and "unpaused tars_deploy__demo" in out
    assert fake.dags["tars_deploy__demo"]["is_paused"] is False


def test_a_missing_rollback_dag_of_a_known_app_exits_2(fake: FakeAirflow, capsys) -> None:
    code, _, err = run(capsys, "rollback", "shop", "--reason", "r")
    assert code == 2 and "no DAG tars_rollback__shop in Airflow" in err


def test_force_and_closed_window(fake: FakeAirflow, capsys) -> None:
    fake.window_open = False
    code, out, _ = run(capsys, "deploy", "demo", "2.0.0", "--force", "hotfix INC-9")
    assert code == 0
    assert "deploy window CLOSED: outside deploy windows" in out and "forced past it" in out
    conf = json.loads(fake.calls("POST", r".*/dagRuns")[0].content)["conf"]
    assert conf["force"] is True and conf["force_reason"] == "hotfix INC-9"


def test_wait_times_out_with_exit_1(fake: FakeAirflow, capsys) -> None:
    fake.steps = [RUNNING]
    code, out, _ = run(capsys, "deploy", "demo", "2.0.0", "--wait", "--poll", "0",
                       "--timeout", "0")
    assert code == 1 and "gave up waiting after 0s: the run is running" in out


def approval(run_id: str = "manual__1", dag_id: str = "tars_deploy__demo") -> dict:
    return {"task_instance": {"dag_id": dag_id, "dag_run_id": run_id, "task_id": "fort.approve",
                              "map_index": -1, "state": "awaiting_input"},
            "subject": "demo: continue the release after fort?",
            "options": ["Continue", "Roll back", "Halt"]}


@pytest.mark.parametrize("flag,option", [((), "Continue"), (("--reject",), "Roll back"),
                                         (("--halt",), "Halt")])
def test_approve_answers_the_waiting_run(fake: FakeAirflow, capsys, flag, option) -> None:
    fake.approvals = [approval()]
    code, out, _ = run(capsys, "approve", "demo", *flag)
    assert code == 0, out
    (patch,) = fake.calls("PATCH", r".*/hitlDetails")
    assert patch.url.path.endswith("/dagRuns/manual__1/taskInstances/fort.approve/-1/hitlDetails")
    assert json.loads(patch.content) == {"chosen_options": [option]}
    assert f"answered '{option}'" in out


def test_approve_finds_the_canary(fake: FakeAirflow, capsys) -> None:
    fake.approvals = [approval("scheduled__x", "tars_canary__demo")]
    code, out, _ = run(capsys, "approve", "demo")
    assert code == 0 and "tars_canary__demo run scheduled__x" in out


def test_approve_with_nothing_or_two_waiting_exits_2(fake: FakeAirflow, capsys) -> None:
    code, _, err = run(capsys, "approve", "demo")
    assert code == 2 and "nothing awaits approval for demo" in err
    fake.approvals = [approval("a"), approval("b")]
    code, _, err = run(capsys, "approve", "demo")
    assert code == 2 and "2 approvals wait for demo; name the run" in err
    code, _, _ = run(capsys, "approve", "demo", "b")
    assert code == 0
    code, _, err = run(capsys, "approve", "demo", "--reject", "--halt")
    assert code == 2


def test_brake_and_release(fake: FakeAirflow, capsys) -> None:
    code, out, _ = run(capsys, "brake", "demo", "--reason", "latency up", "--rollback")
    assert code == 0 and "brake pulled on demo by admin (rollback): latency up" in out
    assert json.loads(fake.calls("POST", r"/tars/apps/demo/brake")[0].content) == {
        "reason": "latency up", "action": "rollback"}
    code, out, _ = run(capsys, "release-brake", "demo", "--reason", "fixed")
    assert code == 0 and "released (was pulled by admin: latency up)" in out
    code, out, _ = run(capsys, "release-brake", "demo")
    assert "no brake was pulled on demo" in out


def test_rollback_triggers_the_rollback_dag(fake: FakeAirflow, capsys) -> None:
    fake.steps = [({"state": "success", "note": "rolled back 2 host(s)"},
                   [ti("restore", "success", 0), ti("restore", "success", 1)])]
    code, out, _ = run(capsys, "rollback", "demo", "--reason", "bad", "--hosts", "host01",
                       "--wait", "--poll", "0")
    assert code == 0, out
    (post,) = fake.calls("POST", r"/api/v2/dags/tars_rollback__demo/dagRuns")
    assert json.loads(post.content)["conf"] == {"reason": "bad", "ticket": "",
                                                "hosts": ["host01"]}
    assert "restore: 2/2 host(s) done" in out


def test_status_shows_run_stages_brake_and_waits(fake: FakeAirflow, capsys) -> None:
    fake.steps = [({"state": "running", "note": "fort · 1/2 hosts on 2.0.0",
                    "run_type": "manual", "triggering_user_name": "ci"},
                   [ti("fort.release", "success", 0), ti("fort.approve", "awaiting_input")])]
    fake.brake = {"by": "ops", "reason": "incident", "action": "hold"}
    code, out, _ = run(capsys, "status", "demo")
    assert code == 0
    assert "tars_deploy__demo: active · brake ON by ops (hold): incident" in out
    assert "run manual__1: running" in out and "  fort: 1/1 host(s) done" in out
    assert "awaiting approval (fort.approve): tars approve demo manual__1" in out


def test_deploy_behind_a_running_release_says_it_waits(fake: FakeAirflow, capsys) -> None:
    fake.active = [{"dag_run_id": "manual__0", "state": "running"}]
    code, out, _ = run(capsys, "deploy", "demo", "2.0.0")
    assert code == 0, out
    assert ("another release of demo is in progress (run manual__0, running); "
            "this release waits until it ends") in out
    body = json.loads(fake.calls("POST", r".*/dagRuns")[0].content)
    assert body["note"] == "queued behind manual__0: one release per app at a time"


def test_approve_holds_the_answer_until_the_task_has_stood_parked(
        fake: FakeAirflow, capsys, monkeypatch) -> None:
    # Airflow 3.3.2 fails an approval answered in the moment its task parks: the answer waits
    # while the task is still running, then until the question is SETTLE_SECONDS old.
    from datetime import datetime, timezone
    import time

    from tars_operators.client import settle

    monkeypatch.setattr(settle, "SETTLE_SECONDS", 0.4)
    asked = datetime.now(timezone.utc)
    fake.approvals = [{**approval(), "created_at": asked.isoformat()}]
    fake.parking = ["running", "running"]
    start = time.monotonic()
    code, out, _ = run(capsys, "approve", "demo")
    assert code == 0, out
    gets = fake.calls("GET", r".*/taskInstances/fort.approve/-1/hitlDetails")
    assert len(gets) >= 3  # two while it ran, then parked (and fresh), then settled
    (patch,) = fake.calls("PATCH", r".*/hitlDetails")
    assert fake.requests.index(patch) > fake.requests.index(gets[-1])
    assert time.monotonic() - start >= 0.4 - 0.05


@pytest.mark.parametrize("state,age,expected", [
    ("running", 60, None), ("queued", 60, None), (None, 60, None),
    ("awaiting_input", 0, 5.0), ("awaiting_input", 2, 3.0), ("awaiting_input", 9, 0.0),
    ("deferred", 9, 0.0), ("success", 0, 0.0), ("failed", 0, 0.0)])
def test_answer_delay(state, age, expected) -> None:
    from datetime import datetime, timedelta, timezone

    from tars_operators.client.settle import answer_delay

    now = datetime(2026, 11, 30, 6, 0, tzinfo=timezone.utc)
    assert answer_delay(state, now - timedelta(seconds=age), now) == expected
