"""Input that should be refused is refused by the real api-server (400, no run) and by prepare.

``{"dryrun": true}`` used to be ignored by Airflow and run a real release; ``"2.0.0\\n"`` was
trimmed into a release. The api-server answers 400 before a run exists (the plugin's guard and
the form's patterns); a run made around the api-server (``airflow dags trigger`` writes to the
database directly) is refused by ``prepare`` before any host is touched.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.e2e.harness import E2E, poll

pytestmark = pytest.mark.e2e

DEPLOY_KEYS = ("batches, dry_run, force, force_reason, hosts, reason, skip_fort, "
               "skip_fort_reason, ticket, version")


def post_run(e2e: E2E, dag_id: str, conf: Any, headers: dict[str, str] | None = None
             ) -> httpx.Response:
    """``POST …/dagRuns`` as any REST caller would send it (the UI's Trigger button does too)."""
    if headers is None:
        headers = e2e.api._auth()
    return httpx.post(f"{e2e.stack.url}/api/v2/dags/{dag_id}/dagRuns", headers=headers,
                      json={"logical_date": None, "conf": conf}, timeout=30)


def run_ids(e2e: E2E, dag_id: str) -> set[str]:
    return {r["dag_run_id"] for r in e2e.api.runs(dag_id, limit=100)}


def assert_untouched(e2e: E2E) -> None:
    for host in e2e.sandbox.hosts:
        assert e2e.releases_on(host.name) == ["1.0.0"], f"{host.name} was touched"
    assert set(e2e.versions().values()) == {"1.0.0"}


def test_unknown_conf_key_is_a_400_naming_every_known_key_and_no_run(e2e: E2E) -> None:
    dag_id = e2e.add_app("demo")
    before = run_ids(e2e, dag_id)
    r = post_run(e2e, dag_id, {"version": "2.0.0", "dryrun": True})
    assert r.status_code == 400, r.text
    assert r.json() == {"detail": "conf: unknown key 'dryrun' (did you mean 'dry_run'?); "
                                  f"{dag_id} knows: {DEPLOY_KEYS}"}
    # The rollback DAG has its own, smaller form: the keys come from the DAG itself.
    e2e.wait_dag("tars_rollback__demo")
    known = ", ".join(sorted(e2e.api.dag_details("tars_rollback__demo")["params"]))
    r = post_run(e2e, "tars_rollback__demo", {"reason": "r", "dry_run": True})
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == ("conf: unknown key 'dry_run'; tars_rollback__demo knows: "
                                  f"{known}")
    assert run_ids(e2e, dag_id) == before
    assert run_ids(e2e, "tars_rollback__demo") == set()
    assert_untouched(e2e)


def test_anonymous_and_bad_tokens_get_airflows_answer_not_the_form(e2e: E2E) -> None:
    dag_id = e2e.add_app("demo")
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        r = post_run(e2e, dag_id, {"dryrun": True}, headers=headers)
        assert r.status_code in (401, 403), r.text
        assert "dry_run" not in r.text


@pytest.mark.parametrize("version", ["2.0.0\n", "2.0.0 ", " 2.0.0"])
def test_a_version_with_a_newline_or_spaces_is_a_400(e2e: E2E, version: str) -> None:
    dag_id = e2e.add_app("demo")
    before = run_ids(e2e, dag_id)
    r = post_run(e2e, dag_id, {"version": version, "reason": "e2e"})
    assert r.status_code == 400, r.text
    assert f"version {version!r} is not allowed" in r.json()["detail"]
    assert run_ids(e2e, dag_id) == before


@pytest.mark.parametrize(("key", "value"), [("batches", "0%,50%"), ("batches", "1,101%"),
                                            ("ticket", "OPS-1\n")])
def test_the_forms_patterns_refuse_what_prepare_would(e2e: E2E, key: str, value: str) -> None:
    """The form's JSON Schema (Airflow's own check, after the guard) refuses them: 400."""
    dag_id = e2e.add_app("demo")
    before = run_ids(e2e, dag_id)
    r = post_run(e2e, dag_id, {"version": "2.0.0", key: value})
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith(f"Invalid input for param {key}: {value!r} does not "
                                         "match"), r.text
    assert run_ids(e2e, dag_id) == before


def test_a_good_conf_still_triggers(e2e: E2E) -> None:
    dag_id = e2e.add_app("demo")
    r = post_run(e2e, dag_id, {"version": "2.0.0", "dry_run": True, "reason": "e2e: good",
                               "batches": "1, 25%, 100%"})
    assert r.status_code == 200, r.text
    run = e2e.api.wait(dag_id, r.json()["dag_run_id"], timeout=180)
    assert run["state"] == "success", run.get("note")
    assert run["note"].startswith("dry run: 10 hosts → 2.0.0"), run["note"]
    assert_untouched(e2e)


def test_a_run_made_around_the_api_server_is_refused_by_prepare(e2e: E2E) -> None:
    """``airflow dags trigger`` writes the run to the database: only prepare can refuse it."""
    dag_id = e2e.add_app("demo")
    before = run_ids(e2e, dag_id)
    conf = json.dumps({"version": "2.0.0", "dryrun": True})
    done = e2e.stack.airflow("dags", "trigger", dag_id, "--conf", conf, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (run_id,) = poll(lambda: run_ids(e2e, dag_id) - before, 60, "the CLI's run")
    run = e2e.api.wait(dag_id, run_id, timeout=180)
    assert run["state"] == "failed", run.get("note")
    assert run["note"].startswith(
        "refused before any host was touched: conf: unknown key 'dryrun' (did you mean "
        f"'dry_run'?); {dag_id} knows: {DEPLOY_KEYS}"), run["note"]
    states = e2e.task_states(dag_id, run_id)
    assert states["prepare"] == "failed" and states["fetch"] in ("skipped", "upstream_failed")
    assert_untouched(e2e)
