"""The DAG file's work: every good app builds, a broken one becomes one import error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tars_operators.errors import ConfigError
from tars_operators.factory.entry import BrokenConfigs, build_all

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]


def write_app(d: Path, name: str, **extra: object) -> None:
    data = {
        "app": {"name": name, "owner": "team"},
        "artifact": {"url": "http://127.0.0.1:1/a-{{ version }}.tar.gz",
                     "checksum": {"url": "{{ url }}.sha256"}},
        "hosts": {"list": [{"name": f"{name}-h{i}", "address": f"127.0.0.{i + 1}",
                            "vars": {"app_port": 8080}} for i in range(4)]},
        "service": {"start": "true", "stop": "true"},
        "traffic": {"min_in_service": 1},
        "strategy": {"fort": 1, "batches": [1, "100%"]},
    }
    data.update(extra)
    (d / f"{name}.yaml").write_text(yaml.safe_dump(data))


def test_builds_every_app_and_only_the_one_asked_for(tmp_path: Path) -> None:
    for name in ("alpha", "beta"):
        write_app(tmp_path, name)
    assert set(build_all(tmp_path)) == {f"tars_{kind}__{app}" for app in ("alpha", "beta")
                                        for kind in ("deploy", "rollback", "inspect")}
    assert set(build_all(tmp_path, only="tars_deploy__beta")) == {"tars_deploy__beta"}
    assert set(build_all(tmp_path, only="tars_inspect__beta")) == {"tars_inspect__beta"}
    assert build_all(tmp_path, only="some_other_dag") == {}


def test_broken_file_is_one_import_error_and_hides_nothing(tmp_path: Path) -> None:
    write_app(tmp_path, "alpha")
    write_app(tmp_path, "broken", strategy={"batchez": [1]})
    dags = build_all(tmp_path, base_dir=tmp_path)
    assert "tars_deploy__alpha" in dags
    broken = dags["tars_broken_configs"]
    assert isinstance(broken, BrokenConfigs)
    with pytest.raises(ConfigError) as err:
        broken.validate()  # what Airflow's DagBag does: the message becomes the import error
    assert "broken.yaml" in str(err.value) and "strategy.batchez" in str(err.value)
    assert "did you mean 'batches'?" in str(err.value)
