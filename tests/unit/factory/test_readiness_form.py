"""The trigger form is built at parse time (no host asked): its hosts field says honestly where
host readiness is checked and shown, and still submits."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tars_operators.config.loader import load_app
from tars_operators.factory.builder import build_dag
from tests.unit.factory.test_dag_shape import spec_for

pytestmark = pytest.mark.unit


def test_the_hosts_field_says_prepare_checks_readiness_and_the_app_tab_shows_it(
        tmp_path: Path) -> None:
    param = build_dag(spec_for(tmp_path, hosts=3)).params.get_param("hosts")
    text = param.description
    assert text.startswith("Narrow the release to some of the app's 3 hosts (empty: all of them)")
    assert "not known to this form" in text
    assert "prepare checks every chosen host before any host leaves rotation" in text
    assert "(an unready host refuses the run)" in text and "App tab" in text
    # Its type is as before: the form still submits a list of hosts, or nothing.
    assert param.resolve(["h01", "h03"], suppress_exception=False) == ["h01", "h03"]
    assert param.resolve(None, suppress_exception=False) is None


def test_skip_unready_and_no_runtime_are_said_as_they_are(tmp_path: Path) -> None:
    path = spec_for(tmp_path, hosts=3).source
    data = yaml.safe_load(path.read_text())
    data["runtime"]["policy"] = "skip_unready"
    path.write_text(yaml.safe_dump(data))
    text = build_dag(load_app(path)).params.get_param("hosts").description
    assert "(an unready host is left out of it)" in text
    data.pop("runtime")
    path.write_text(yaml.safe_dump(data))
    text = build_dag(load_app(path)).params.get_param("hosts").description
    assert text == "Narrow the release to some of the app's 3 hosts (empty: all of them)"
