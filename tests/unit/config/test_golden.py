"""Golden files: each golden/<case>.yaml must fail with exactly the lines in <case>.expected.

Regenerate after an intended message change with ``TARS_UPDATE_GOLDEN=1`` and review the diff.
A case may bring its own defaults as golden/_defaults/<case>.yaml.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tars_operators.config.loader import load_app
from tars_operators.errors import ConfigError

pytestmark = pytest.mark.unit

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
CASES = sorted(p.stem for p in GOLDEN.glob("*.yaml"))


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TARS_GOLDEN_NO_SUCH_VAR", raising=False)
    defaults = GOLDEN / "_defaults" / f"{case}.yaml"
    with pytest.raises(ConfigError) as caught:
        load_app(GOLDEN / f"{case}.yaml", defaults if defaults.exists() else None, base_dir=HERE)
    actual = "\n".join(caught.value.errors) + "\n"
    expected_file = GOLDEN / f"{case}.expected"
    if os.environ.get("TARS_UPDATE_GOLDEN"):
        expected_file.write_text(actual)
    assert actual == expected_file.read_text()
