"""Host assembly on the real sandbox and Airflow: a blank machine joins the app through
``tars_assemble__demo``; a host missing a requirement stops a release before any host leaves
rotation, or (``skip_unready``) is left out while the others release."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.blank import blank_host
from tests.e2e.harness import DEMO, E2E

pytestmark = pytest.mark.e2e


def xcom(e2e: E2E, dag_id: str, run_id: str, task_id: str) -> Any:
    return e2e.api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/"
                                  f"{task_id}/xcomEntries/return_value")["value"]


# The demo's own assemble steps plus a file rendered from a template (configs/templates/demo/).
ENV_FILE = {"kind": "file", "src": "../templates/demo/runtime.env.j2",
            "dest": "{{ deploy_root }}/shared/runtime.env", "mode": "0640"}


def test_a_blank_host_is_assembled_and_joins_then_a_second_run_changes_nothing(e2e: E2E) -> None:
    started = time.monotonic()
    demo = yaml.safe_load(DEMO.read_text())["runtime"]
    e2e.add_app("demo", runtime={**demo, "assemble": [*demo["assemble"], ENV_FILE]})
    dag_id = "tars_assemble__demo"
    e2e.wait_dag(dag_id)
    sb = e2e.sandbox
    host = sb.hosts[-1]
    try:
        blank_host(sb, host.name)
        assert not host.deploy_root.exists()
        assert sb.server_states()[host.name].startswith("MAINT")
        assert sb.served_version(host) is None
        run = e2e.release(dag_id, {"hosts": [host.name], "install": True, "reason": "new machine"},
                          timeout=180)
        assert run["state"] == "success", run.get("note")
        done = xcom(e2e, dag_id, run["dag_run_id"], "assemble")["hosts"][0]
        assert done["host"] == host.name and done["ready"], done
        assert [s["state"] for s in done["steps"]] == ["changed"] * 4, done["steps"]
        joined = xcom(e2e, dag_id, run["dag_run_id"], "join")
        assert joined["version"] == "1.0.0" and joined["installed"][0]["state"] == "changed"
        assert sb.served_version(host) == "1.0.0"
        assert sb.server_states()[host.name] == "UP"
        assert (host.deploy_root / "shared" / "runtime.env").read_text().startswith("# Written by")
        assert f"{host.name}: 4 changed; ready" in run["note"]

        again = e2e.release(dag_id, {"hosts": [host.name], "install": True, "reason": "again"},
                            timeout=120)
        assert again["state"] == "success", again.get("note")
        done = xcom(e2e, dag_id, again["dag_run_id"], "assemble")["hosts"][0]
        assert [s["state"] for s in done["steps"]] == ["unchanged"] * 4, done["steps"]
        joined = xcom(e2e, dag_id, again["dag_run_id"], "join")["installed"][0]
        assert joined["state"] == "unchanged", joined
        assert sb.server_states()[host.name] == "UP" and sb.served_version(host) == "1.0.0"
    finally:
        sb.reset()
    print(f"\nassemble e2e: {time.monotonic() - started:.1f}s")


def _inventory_with(e2e: E2E, host: str, **host_vars: Any) -> Path:
    """The sandbox inventory with extra vars on one host (a copy beside the test's configs)."""
    data = yaml.safe_load(e2e.sandbox.inventory_path.read_text())
    for entry in data["hosts"]:
        if entry["name"] == host:
            entry["vars"] = {**entry.get("vars", {}), **host_vars}
    path = e2e.config_dir.parent / f"inventory-{host}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# Each host's interpreter, as a var (teams pin one per host); the test's host names one it lacks.
PY = {"kind": "command", "command": "{{ vars.python | default('python3') }}", "version": ">= 3.11"}


def test_a_host_missing_a_requirement_stops_the_release_or_is_skipped(e2e: E2E) -> None:
    started = time.monotonic()
    sb = e2e.sandbox
    lacking = sb.hosts[2].name
    inventory = _inventory_with(e2e, lacking, python="/opt/python3.12/bin/python3")
    runtime = {"requires": [PY, {"kind": "free_disk", "mb": 64}]}
    dag_id = e2e.add_app("preflight", **{"hosts.inventory": str(inventory), "runtime": runtime})
    run = e2e.release(dag_id, {"version": "1.1.0", "reason": "refused"}, timeout=120)
    note = run.get("note") or ""
    assert run["state"] == "failed", note
    assert "refused before any host was touched: preflight" in note
    assert f"{lacking}: /opt/python3.12/bin/python3 >= 3.11: found not found" in note
    states = e2e.task_states(dag_id, run["dag_run_id"])
    assert states["prepare"] == "failed" and states.get("fort.release[0]") in (None, "skipped",
                                                                                "upstream_failed")
    assert set(e2e.versions().values()) == {"1.0.0"}
    assert set(sb.server_states().values()) == {"UP"}

    dag_id = e2e.add_app("preflight_skip", **{"hosts.inventory": str(inventory),
                                              "runtime": {**runtime, "policy": "skip_unready"}})
    # Three hosts keep it short: the unready one between two that are ready.
    three = [h.name for h in sb.hosts[1:4]]
    run = e2e.release(dag_id, {"version": "1.1.0", "reason": "skip", "hosts": three},
                      timeout=180)
    note = run.get("note") or ""
    assert run["state"] == "success", note
    assert f"skipped (not ready): {lacking}" in note  # in the reason: every later note shows it
    versions = e2e.versions()
    assert {h: versions.pop(h) for h in three} == {three[0]: "1.1.0", lacking: "1.0.0",
                                                   three[2]: "1.1.0"}
    assert set(versions.values()) == {"1.0.0"}
    assert set(sb.server_states().values()) == {"UP"}
    print(f"\npreflight e2e: {time.monotonic() - started:.1f}s")
