"""What can be checked of the Dockerfile without a Docker engine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]


def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_base_image_airflow_version_matches_the_pinned_one() -> None:
    base = re.search(r"^FROM apache/airflow:(\S+)", _dockerfile(), re.M)
    assert base, "Dockerfile must start from the official apache/airflow image"
    pinned = re.search(r"^apache-airflow==(\S+)$", (REPO / "requirements.txt").read_text(), re.M)
    assert pinned
    version, _, python = base.group(1).partition("-")
    assert version == pinned.group(1)
    assert python == "python3.11"


def test_every_copied_path_exists() -> None:
    sources = []
    for line in _dockerfile().splitlines():
        if line.startswith("COPY"):
            parts = [p for p in line.split()[1:] if not p.startswith("--")]
            sources += parts[:-1]
    assert {"dags/", "plugins/", "configs/", "requirements.txt"} <= set(sources)
    for src in sources:
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"


def test_ssh_client_is_installed() -> None:
    assert "openssh-client" in _dockerfile()


def test_the_image_installs_no_test_tool() -> None:
    """Test tools live in requirements-test.txt, which the image does not install."""
    runtime = (REPO / "requirements.txt").read_text().lower()
    for tool in ("pytest", "selenium", "mypy", "types-", "aiosmtpd"):
        assert f"\n{tool}" not in runtime, f"{tool} belongs in requirements-test.txt"
    assert "requirements-test.txt" not in _dockerfile()
    assert "-r requirements.txt" in (REPO / "requirements-test.txt").read_text()
