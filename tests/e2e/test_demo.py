"""The README's main job, unattended: `./scripts/demo --ci` releases the demo app and exits 0."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sandbox import Sandbox

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def test_demo_ci_releases_v2_everywhere_and_stops_what_it_started() -> None:
    demo_sandbox = Sandbox(REPO / ".sandbox")
    if demo_sandbox.is_up():
        pytest.skip("a developer's demo sandbox is running on 127.0.0.11+; not touching it")
    proc = subprocess.run(["./scripts/demo", "--ci"], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "release success" in out
    assert out.count("serves 2.0.0  HAProxy UP") == 10, out[-2000:]
    assert "Airflow UI: http://127.0.0.1:" in out and "login: admin / " in out
    assert not demo_sandbox.is_up(), "the demo left its sandbox running"
