"""``traffic.pool``: two apps behind one HAProxy never have more hosts out of rotation together
than the pool's slots (issue 15), with the pool made by ``tars pools sync``."""

from __future__ import annotations

import time

import pytest

from tars_operators.cli import main as tars
from tests.e2e.harness import E2E

pytestmark = pytest.mark.e2e
POOL = "e2e-lb-front"
SLOTS = 2


def test_two_apps_sharing_a_pool_never_have_more_hosts_out_together(
        e2e: E2E, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    hosts = [h.name for h in e2e.sandbox.hosts]
    halves = {"pool_a": hosts[:5], "pool_b": hosts[5:]}
    # Each app alone may take its 5 hosts out at once (one batch of 5, floor 1): only the pool
    # keeps the two releases together at SLOTS.
    dags = {app: e2e.add_app(app, **{"traffic.pool": {"name": POOL, "slots": SLOTS},
                                     "traffic.min_in_service": 1, "strategy.fort": 0,
                                     "strategy.batches": [5]})
            for app in halves}
    monkeypatch.setenv("TARS_AIRFLOW_URL", e2e.stack.url)
    monkeypatch.setenv("TARS_AIRFLOW_USER", e2e.stack.user)
    monkeypatch.setenv("TARS_AIRFLOW_PASSWORD", e2e.stack.password)
    # Only these two apps' configs (other tests' apps in the config dir do not matter here).
    mine = e2e.config_dir.parent / "pool-apps"
    mine.mkdir(exist_ok=True)
    for app in halves:
        (mine / f"{app}.yaml").write_text((e2e.config_dir / f"{app}.yaml").read_text())
    assert tars(["pools", "sync", "--config-dir", str(mine)]) == 0
    assert f"{POOL}: {SLOTS} slots in the configs" in capsys.readouterr().out
    pool = e2e.api.obj("GET", f"/api/v2/pools/{POOL}")
    assert (pool["slots"], pool["include_deferred"]) == (SLOTS, True)

    api = e2e.api
    runs = {app: api.trigger(dags[app], {"version": "2.0.0", "hosts": halves[app],
                                         "reason": "e2e shared pool"})["dag_run_id"]
            for app in halves}
    most, seen_out = 0, set()
    finished: dict[str, dict] = {}
    deadline = time.monotonic() + 300
    next_check = 0.0
    while len(finished) < len(runs):
        assert time.monotonic() < deadline, f"releases not done in 300 s: {finished}"
        out = {name for name, state in e2e.sandbox.server_states().items()
               if not state.startswith("UP")}
        most = max(most, len(out))
        seen_out |= out
        if time.monotonic() >= next_check:
            for app, run_id in runs.items():
                run = api.run(dags[app], run_id)
                if run["state"] in ("success", "failed"):
                    finished[app] = run
            next_check = time.monotonic() + 1.0
        time.sleep(0.02)
    print(f"\nat most {most} server(s) out of rotation together; pool {POOL} has {SLOTS} slots")
    for app, run in finished.items():
        assert run["state"] == "success", (app, run.get("note"))
    assert e2e.versions() == {h: "2.0.0" for h in hosts}
    assert set(e2e.sandbox.server_states().values()) == {"UP"}
    assert most <= SLOTS, f"{most} servers out of rotation at once; the pool allows {SLOTS}"
    # not vacuous: the pool was full, and both apps' hosts went out while the other ran
    assert most == SLOTS and seen_out == set(hosts)
    tis = {app: [t for t in api.task_instances(dags[app], runs[app])
                 if t["task_id"].endswith(".release")] for app in halves}
    assert all(t["pool"] == POOL for ts in tis.values() for t in ts)
    a_span = (min(t["start_date"] for t in tis["pool_a"]), max(t["end_date"] for t in tis["pool_a"]))
    b_span = (min(t["start_date"] for t in tis["pool_b"]), max(t["end_date"] for t in tis["pool_b"]))
    assert a_span[0] < b_span[1] and b_span[0] < a_span[1], "the two releases did not overlap"
