"""Tars: one release DAG per app config in configs/apps/ (see docs/config.md)."""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import get_parsing_context

from tars_operators.factory.entry import build_all

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(os.environ.get("TARS_CONFIG_DIR", REPO / "configs" / "apps"))

globals().update(build_all(CONFIG_DIR, only=get_parsing_context().dag_id, base_dir=REPO))
