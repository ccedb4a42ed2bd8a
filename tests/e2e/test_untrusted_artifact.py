"""A crafted artifact under the real services: refused before any host leaves rotation.

Pushed, the controller's check refuses it in ``fetch``: the run FAILS before any host with the
member named. Pulled, each host's own check refuses it while the host still serves: the run
fails, every host still serves the old release, in rotation, and never kept the crafted one.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.harness import E2E
from tests.e2e.test_fault_outcomes import OLD, failed_before_hosts, untouched
from tests.integration.test_crafted_archives import CHAIN, tar_of

pytestmark = pytest.mark.e2e

EVIL = "6.6.6"


@pytest.fixture
def published(e2e: E2E) -> Iterator[Path]:
    """The three-link chain of issue 12 published as demo-6.6.6 on the sandbox's server."""
    data = gzip.compress(tar_of(CHAIN))
    path = e2e.sandbox.artifacts_dir / f"demo-{EVIL}.tar.gz"
    path.write_bytes(data)
    sums = path.with_name(path.name + ".sha256")
    sums.write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        sums.unlink(missing_ok=True)


def test_a_pushed_crafted_archive_fails_the_run_before_any_host(e2e: E2E, published: Path) -> None:
    dag_id = e2e.add_app("evilpush")
    failed_before_hosts(e2e, dag_id, {"version": EVIL}, "refusing unsafe archive",
                        "'x' -> 'a/b/c/d/l/../../../../..'")
    untouched(e2e, EVIL)


def test_a_pulled_crafted_archive_is_refused_by_the_host_in_rotation(e2e: E2E, published: Path) -> None:
    dag_id = e2e.add_app("evilpull", **{"artifact.delivery": "pull"})
    run = e2e.release(dag_id, {"version": EVIL, "reason": "e2e: crafted artifact, pulled"},
                      timeout=240)
    note = run.get("note") or ""
    print(f"\n{dag_id} → {run['state']}: {note}")
    assert run["state"] == "failed", note
    assert "unsafe archive" in note or "refus" in note, note
    untouched(e2e, EVIL)
    assert set(e2e.versions().values()) == {OLD}
