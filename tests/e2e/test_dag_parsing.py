"""Airflow's own parsing of the app configs: a broken file hides no other app (issue 3)."""

from __future__ import annotations

import time

import pytest

from tests.e2e.harness import E2E

pytestmark = pytest.mark.e2e

BROKEN = """app:
  name: broken_app
  owner: team
artifact:
  url: "http://127.0.0.1:1/x-{{ version }}.tar.gz"
  checksum: {url: "{{ url }}.sha256"}
hosts:
  list: [{name: a1, address: 127.0.0.1}]
service: {start: "true", stop: "true"}
strategy:
  batchez: [1]
"""


def test_broken_config_is_an_import_error_and_hides_no_other_app(e2e_stack: E2E) -> None:
    e2e = e2e_stack
    good = e2e.add_app("parse_ok")
    (e2e.config_dir / "broken_app.yaml").write_text(BROKEN)
    try:
        deadline = time.monotonic() + 90
        errors: list = []
        while time.monotonic() < deadline:
            errors = e2e.api.request("GET", "/api/v2/importErrors")["import_errors"]
            if any("broken_app.yaml" in e["stack_trace"] for e in errors):
                break
            time.sleep(1)
        text = "\n".join(e["stack_trace"] for e in errors)
        assert "broken_app.yaml:11:3: strategy.batchez: unknown key" in text, text
        assert "did you mean 'batches'?" in text
        assert e2e.api.dag(good)["is_paused"] is False  # the good app's DAG is still there
    finally:
        (e2e.config_dir / "broken_app.yaml").unlink()
