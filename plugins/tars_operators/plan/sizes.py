"""Sizes in a strategy: a count of hosts (``3``) or a percentage of a total (``"25%"``)."""

from __future__ import annotations

import re

from tars_operators.errors import PlanError

Size = int | str
_PERCENT = re.compile(r"^(100|[1-9]?[0-9])%$")


def parse_size(text: str | int) -> Size:
    """``"3"`` → 3, ``"25%"`` → ``"25%"``; raises ``PlanError`` for anything else."""
    if isinstance(text, bool):
        raise PlanError(f"expected a host count or a percentage like '25%', got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise PlanError(f"expected a host count >= 0, got {text}")
        return text
    value = text.strip()
    if value.isdigit():
        return int(value)
    if _PERCENT.match(value):
        return value
    raise PlanError(f"expected a host count or a percentage like '25%', got '{text}'")


def _percent(size: Size) -> int | None:
    return int(size[:-1]) if isinstance(size, str) else None


def batch_size(size: Size, total: int) -> int:
    """Ansible ``serial``: a percentage of ``total`` rounded down, but at least 1."""
    pct = _percent(size)
    if pct is None:
        if int(size) < 1:
            raise PlanError(f"a batch must hold at least 1 host, got {size}")
        return int(size)
    return max(1, total * pct // 100)


def budget_count(size: Size, total: int) -> int:
    """A failure budget: a percentage of ``total`` rounded down (10% of 5 hosts is 0)."""
    pct = _percent(size)
    return int(size) if pct is None else total * pct // 100
