"""One writer per host (issue 11): deploy and rollback DAGs of one app never work on a host
at the same time — read from the hosts' own lease logs — and their notes match the hosts.

Also: a rollback after a release halted at the fort stage moves only the fort host, and a
second rollback moves nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tars_operators.steps.lease import Holder, parse_log
from tests.e2e.harness import E2E, poll

pytestmark = pytest.mark.e2e

OLD = "1.0.0"


def lease_log(e2e: E2E, host: str) -> list[Any]:
    path = Path(e2e.sandbox.host(host).deploy_root) / ".tars" / "lease.log"
    return parse_log(path.read_text()) if path.exists() else []


def assert_one_writer(e2e: E2E, hosts: list[str]) -> dict[str, list[Holder]]:
    """From each host's lease log: a holder's events all sit between its acquire and release."""
    seen: dict[str, list[Holder]] = {}
    for host in hosts:
        holder: Holder | None = None
        order: list[Holder] = []
        for ev in lease_log(e2e, host):
            if ev.event in ("acquire", "takeover"):
                assert holder is None or ev.event == "takeover", (host, holder, ev)
                holder = ev.holder
                order.append(ev.holder)
            else:
                assert ev.holder == holder, f"{host}: {ev.holder} {ev.event} while {holder} held it"
                if ev.event == "release":
                    holder = None
        assert holder is None, f"{host}: the lease of {holder} was never given back"
        seen[host] = order
    return seen


def names(e2e: E2E, n: int) -> list[str]:
    return [h.name for h in e2e.sandbox.hosts[:n]]


def finished(e2e: E2E, dag_id: str, run_id: str, timeout: float = 400) -> dict[str, Any]:
    return e2e.api.wait(dag_id, run_id, timeout=timeout)


def test_rollback_triggered_mid_release_waits_for_it_then_undoes_it(e2e: E2E) -> None:
    app = "demo_lease"
    dag_id = e2e.add_app(app, **{"strategy.batches": [1, 2, "100%"]})
    e2e.wait_dag(f"tars_rollback__{app}")
    hosts = names(e2e, 4)
    api = e2e.api
    release = api.trigger(dag_id, {"version": "2.0.0-slow", "reason": "e2e: one writer",
                                   "hosts": hosts})["dag_run_id"]
    poll(lambda: "2.0.0-slow" in e2e.releases_on("host01"), 240, "the release to reach host01",
         interval=0.2)
    rollback = api.trigger(f"tars_rollback__{app}", {"reason": "e2e: rollback mid-release",
                                                      "hosts": hosts})["dag_run_id"]
    rel = finished(e2e, dag_id, release)
    back = finished(e2e, f"tars_rollback__{app}", rollback)
    print(f"\nrelease {rel['state']}: {rel['note']}\nrollback {back['state']}: {back['note']}")
    # The release was not disturbed: it finished first, every host on 2.0.0-slow by its note
    assert rel["state"] == "success", rel["note"]
    assert rel["note"].startswith("succeeded · 4/4 hosts on 2.0.0-slow"), rel["note"]
    # The rollback waited for it, then undid exactly that run on its hosts
    assert back["state"] == "success", back["note"]
    assert f"undoing run {release}" in back["note"], back["note"]
    versions = e2e.versions()
    assert {h: versions[h] for h in hosts} == {h: OLD for h in hosts}, versions
    assert set(e2e.sandbox.server_states().values()) == {"UP"}
    order = assert_one_writer(e2e, hosts)
    for host in hosts:  # on every host: the release's lease first, then the rollback's
        assert [h.run_id for h in order[host]][-2:] == [release, rollback], (host, order[host])


def test_rollback_after_a_halted_fort_moves_only_the_fort_host_and_twice_is_a_no_op(e2e: E2E) -> None:
    app = "demo_halt"
    dag_id = e2e.add_app(app, **{"strategy.on_failure": "halt"})
    e2e.wait_dag(f"tars_rollback__{app}")
    run = e2e.release(dag_id, {"version": "2.0.0-broken", "reason": "e2e: halted fort"})
    print(f"\nrelease {run['state']}: {run['note']}")
    assert run["state"] == "failed" and run["note"].startswith("halted:"), run["note"]
    before = {h.name: sorted(e2e.releases_on(h.name)) for h in e2e.sandbox.hosts}
    back = e2e.release(f"tars_rollback__{app}", {"reason": "e2e: undo the halted release"})
    print(f"rollback {back['state']}: {back['note']}")
    assert back["state"] == "success", back["note"]
    assert ": 1 of 10 host(s) move" in back["note"].splitlines()[0], back["note"]
    assert e2e.versions() == {h.name: OLD for h in e2e.sandbox.hosts}
    assert set(e2e.sandbox.server_states().values()) == {"UP"}
    again = e2e.release(f"tars_rollback__{app}", {"reason": "e2e: rollback twice"})
    print(f"again {again['state']}: {again['note']}")
    assert again["state"] == "success", again["note"]
    assert ": 0 of 10 host(s) move" in again["note"].splitlines()[0], again["note"]
    assert e2e.versions() == {h.name: OLD for h in e2e.sandbox.hosts}
    # hosts the halted release never touched have exactly the releases they had
    after = {h.name: sorted(e2e.releases_on(h.name)) for h in e2e.sandbox.hosts}
    assert {h: after[h] for h in after if h != "host01"} == {h: before[h] for h in before if h != "host01"}
    assert_one_writer(e2e, [h.name for h in e2e.sandbox.hosts])


def test_a_release_triggered_during_a_rollback_waits_for_the_hosts_it_holds(e2e: E2E) -> None:
    app = "demo_lease2"
    dag_id = e2e.add_app(app, **{"strategy.batches": [1, 2, "100%"]})
    rb_dag = f"tars_rollback__{app}"
    e2e.wait_dag(rb_dag)
    hosts = names(e2e, 4)
    first = e2e.release(dag_id, {"version": "2.0.0-slow", "reason": "e2e: before", "hosts": hosts})
    assert first["state"] == "success", first["note"]
    api = e2e.api
    rollback = api.trigger(rb_dag, {"reason": "e2e: undo 2.0.0-slow", "hosts": hosts})["dag_run_id"]
    # the rollback holds host01 (restoring) when the next release starts
    poll(lambda: any(ev.holder.run_id == rollback for ev in lease_log(e2e, "host01")), 240,
         "the rollback to take host01", interval=0.2)
    release = api.trigger(dag_id, {"version": "2.1.0", "reason": "e2e: after", "hosts": hosts})["dag_run_id"]
    back = finished(e2e, rb_dag, rollback)
    rel = finished(e2e, dag_id, release)
    print(f"\nrollback {back['state']}: {back['note']}\nrelease {rel['state']}: {rel['note']}")
    assert back["state"] == "success", back["note"]
    assert rel["state"] == "success", rel["note"]
    assert rel["note"].startswith("succeeded · 4/4 hosts on 2.1.0"), rel["note"]
    versions = e2e.versions()
    assert {h: versions[h] for h in hosts} == {h: "2.1.0" for h in hosts}, versions
    assert set(e2e.sandbox.server_states().values()) == {"UP"}
    order = assert_one_writer(e2e, hosts)
    for host in hosts:  # the rollback had each host before the release
        runs = [h.run_id for h in order[host]]
        assert runs.index(rollback) < runs.index(release), (host, runs)
