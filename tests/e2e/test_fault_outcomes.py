"""Outcomes that tell the truth under faults (issue 11), under the real Airflow services.

A release that cannot fetch its artifact — server down, 404, wrong checksum, truncated
download — touches no host and must end FAILED with the reason in its note, and
``tars deploy --wait`` must exit 1 (a CI pipeline must not go green with nothing released).
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from tests.e2e.harness import E2E, poll
from tests.e2e.test_starting import tars

pytestmark = pytest.mark.e2e

OLD = "1.0.0"


def untouched(e2e: E2E, version: str) -> None:
    """Every host still serves the old release, in rotation, and never received ``version``."""
    assert e2e.versions() == {h.name: OLD for h in e2e.sandbox.hosts}
    assert set(e2e.sandbox.server_states().values()) == {"UP"}, e2e.sandbox.server_states()
    for host in e2e.sandbox.hosts:
        assert version not in e2e.releases_on(host.name), f"{host.name} was touched"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def failed_before_hosts(e2e: E2E, dag_id: str, conf: dict, *words: str) -> dict:
    run = e2e.release(dag_id, {"reason": "e2e fault: fetch", **conf}, timeout=180)
    note = run.get("note") or ""
    states = e2e.task_states(dag_id, run["dag_run_id"])
    print(f"\n{dag_id} → {run['state']}: {note}\n{states}")
    assert run["state"] == "failed", note
    assert note.startswith("FAILED before any host: fetch"), note
    for word in words:
        assert word in note, (word, note)
    assert states["abort"] == "failed" and states["fetch"] == "failed", states
    assert not any(k.startswith("fort.release") and v == "success" for k, v in states.items())
    return run


def test_404_fails_the_run_and_tars_deploy_exits_1(e2e: E2E) -> None:
    dag_id = e2e.add_app("demo")
    failed_before_hosts(e2e, dag_id, {"version": "9.9.9"}, "HTTP 404", "no host was touched")
    result = tars(e2e, "deploy", "demo", "9.9.9", "--reason", "e2e: 404", "--wait")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED before any host: fetch 9.9.9" in result.stdout
    untouched(e2e, "9.9.9")


def test_wrong_checksum_fails_the_run(e2e: E2E) -> None:
    dag_id = e2e.add_app("badsum", **{"artifact.checksum": {"sha256": {"2.0.0": "0" * 64}}})
    failed_before_hosts(e2e, dag_id, {"version": "2.0.0"}, "sha256 is", "expected " + "0" * 64)
    untouched(e2e, "2.0.0")


def test_truncated_download_fails_the_run(e2e: E2E, tmp_path: Path) -> None:
    # An artifact no earlier test has cached (the cache is keyed by sha256, and a verified
    # copy of the same bytes would rightly be used): 2.0.0's bytes plus a unique tail.
    import hashlib
    import uuid

    whole = (e2e.sandbox.artifacts_dir / "demo-2.0.0.tar.gz").read_bytes() + uuid.uuid4().bytes
    cut = tmp_path / "demo-2.0.0.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    (tmp_path / (cut.name + ".sha256")).write_text(
        f"{hashlib.sha256(whole).hexdigest()}  {cut.name}\n")
    dag_id = e2e.add_app("truncated", **{"artifact.url": f"file://{tmp_path}/demo-{{{{ version }}}}.tar.gz"})
    failed_before_hosts(e2e, dag_id, {"version": "2.0.0"}, "sha256 is", "corrupt")
    untouched(e2e, "2.0.0")


def test_artifact_server_down_is_retried_then_fails_the_run(e2e: E2E) -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    dag_id = e2e.add_app("noserver", **{"artifact.url": base + "/demo-{{ version }}.tar.gz",
                                        "artifact.retry_for": 3})
    failed_before_hosts(e2e, dag_id, {"version": "2.0.0"}, "ConnectError",
                        "still failing after artifact.retry_for=3s")
    untouched(e2e, "2.0.0")


# ---- hosts installed by another tool ------------------------------------------------------


def as_another_tool_left_it(e2e: E2E) -> None:
    """No Tars metadata anywhere, ``current`` an ABSOLUTE link: what another tool leaves."""
    for host in e2e.sandbox.hosts:
        root = Path(host.deploy_root)
        shutil.rmtree(root / "releases" / OLD / ".tars")
        tmp = root / "current.tmp-adopt"
        tmp.symlink_to(root / "releases" / OLD)
        tmp.replace(root / "current")


def test_a_broken_first_release_on_adopted_hosts_restores_the_fort_host(e2e: E2E) -> None:
    from tests.e2e.harness import Load

    as_another_tool_left_it(e2e)
    dag_id = e2e.add_app("demo")
    fort = e2e.sandbox.hosts[0].name
    with Load(e2e.sandbox.frontend_url + "/", rate=50) as load:
        run = e2e.release(dag_id, {"version": "2.0.0-broken", "reason": "e2e: adopted fleet"})
    note = run.get("note") or ""
    print(f"\n{run['state']}: {note}\nload: {load.ok} ok, {load.failed} failed")
    assert run["state"] == "failed" and note.startswith("rolled back: fort: 1 host(s) failed"), note
    assert f"{fort}: restored to {OLD}, in rotation" in note, note
    assert "1/1 touched host(s) on a good release and UP." in note and "; NOT:" not in note, note
    assert e2e.versions() == {h.name: OLD for h in e2e.sandbox.hosts}
    assert set(e2e.sandbox.server_states().values()) == {"UP"}
    assert load.failed == 0, f"{load.failed} failed requests: {load.errors[:5]}"
    assert load.ok > 50, "the load generator did not run during the release"
    meta = Path(e2e.sandbox.host(fort).deploy_root) / "releases" / OLD / ".tars" / "release.json"
    assert '"adopted"' in meta.read_text(), "the adopted release was not recorded as a target"
    for host in e2e.sandbox.hosts[1:]:
        assert "2.0.0-broken" not in e2e.releases_on(host.name), f"{host.name} was touched"


# ---- the load balancer's admin API gone for a while ----------------------------------------


def test_haproxy_admin_socket_gone_20s_mid_batch_is_waited_out(e2e: E2E) -> None:
    """traffic.api_deadline (60 s by default) outlasts a 20 s outage of the runtime API."""
    import threading
    import time

    from tests.e2e.harness import Load, poll

    dag_id = e2e.add_app("demo_lbgone", **{"strategy.batches": [1, 2, "100%"]})
    hosts = [h.name for h in e2e.sandbox.hosts[:4]]
    sock = Path(e2e.sandbox.haproxy_socket)
    away = sock.with_name(sock.name + ".away")
    gone: dict[str, float] = {}

    def outage() -> None:
        poll(lambda: "2.0.0" in e2e.releases_on("host02"), 240, "batch 1 to start", interval=0.1)
        sock.rename(away)
        gone["at"] = time.monotonic()
        try:
            time.sleep(20)
        finally:
            away.rename(sock)
            gone["for"] = time.monotonic() - gone["at"]

    cut = threading.Thread(target=outage, daemon=True)
    try:
        with Load(e2e.sandbox.frontend_url + "/", rate=50) as load:
            cut.start()
            run = e2e.release(dag_id, {"version": "2.0.0", "reason": "e2e: LB API outage",
                                       "hosts": hosts}, timeout=400)
            cut.join(60)
    finally:
        if away.exists() and not sock.exists():
            away.rename(sock)
    note = run.get("note") or ""
    print(f"\n{run['state']}: {note}\nsocket gone {gone.get('for', 0):.1f}s; "
          f"load: {load.ok} ok, {load.failed} failed")
    assert gone.get("for", 0) >= 20, "the outage did not happen during the release"
    assert run["state"] == "success", note
    assert note.startswith("succeeded · 4/4 hosts on 2.0.0"), note
    versions = e2e.versions()
    assert {h: versions[h] for h in hosts} == {h: "2.0.0" for h in hosts}
    assert set(e2e.sandbox.server_states().values()) == {"UP"}
    assert load.failed == 0, f"{load.failed} failed requests: {load.errors[:5]}"


def test_an_approval_task_that_fails_stops_the_release_and_says_so(e2e: E2E) -> None:
    # The approval after the fort fails (here marked failed by an operator; Airflow 3.3.2 does
    # it itself to an approval answered as its task parks). Airflow still runs finalize, whose
    # gates did not fail: it must not call the release a success, nor the hosts of the stages
    # that never ran "failed" or "died".
    dag_id = e2e.add_app("demo_stop", **{
        "strategy.batches": [1, "100%"], "traffic.min_in_service": "10%",
        "strategy.approval": {"enabled": True, "after": ["fort"], "timeout_seconds": 600,
                              "default": "halt"}})
    hosts = ["host01", "host02", "host03"]
    run_id = e2e.api.trigger(dag_id, {"version": "2.0.0", "reason": "e2e: approval fails",
                                      "hosts": hosts})["dag_run_id"]
    poll(lambda: e2e.api.pending_approvals(dag_id, run_id), 240, "the approval after the fort")
    e2e.api.request("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/fort.approve",
                    json={"new_state": "failed"})
    run = e2e.api.wait(dag_id, run_id, timeout=180)
    note = run.get("note") or ""
    states = e2e.task_states(dag_id, run_id)
    print(f"\n{dag_id} → {run['state']}: {note}\n{states}")
    assert run["state"] == "failed", note
    assert note.startswith("FAILED: stopped at fort.approve (failed, see its log) · "
                           "1/3 hosts on 2.0.0 · 0 failed"), note
    assert "not released (still on their release, never touched by this run): host02, host03" \
        in note, note
    assert "died" not in note and "succeeded" not in note and "within budget" not in note, note
    assert states["finalize"] == "failed", states
    assert e2e.versions() == {"host01": "2.0.0", "host02": OLD, "host03": OLD,
                              **{h.name: OLD for h in e2e.sandbox.hosts if h.name not in hosts}}
    assert set(e2e.sandbox.server_states().values()) == {"UP"}, e2e.sandbox.server_states()
    for host in hosts:
        assert e2e.lease(host) is None, f"{host}: lease left: {e2e.lease(host)}"
