"""The base of Tars's operators: each task loads its app's spec from the config file."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from tars_operators.config.spec import AppSpec
from tars_operators.release.runtime import load_spec


class SpecOperator(BaseOperator):
    """An operator of one app: ``config_path`` (and the shared defaults) name its config; the
    spec is loaded once per process (the DAG file's parse usually already did)."""

    def __init__(self, *, config_path: str, defaults_path: str | None, **kwargs: Any):
        super().__init__(**kwargs)
        self.config_path = config_path
        self.defaults_path = defaults_path

    @property
    def spec(self) -> AppSpec:
        return load_spec(self.config_path, self.defaults_path)
