"""A run's conf against its DAG's form: the one check the API guard, ``prepare`` and the CLI share.

Pure (stdlib only): the ``tars`` client imports it without Airflow or pydantic. The known keys
always come from the DAG itself (its Params) — deploy, canary and rollback DAGs differ.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from tars_operators.errors import InvalidValue, PlanError
from tars_operators.remote.validate import validate_version

# Values that mean "the artifact store's latest pointer" rather than a version.
LATEST = ("", "latest")
# Stricter than the config loader's 0.6: conf keys are short, and 'version' → 'reason' misleads.
HINT_CUTOFF = 0.7
# One size of a ramp: a host count > 0 or a percentage in 1..100 (ASCII digits only). Written
# so JavaScript reads them the same: the trigger form's ``batches`` pattern is built from them.
COUNT = r"0*[1-9][0-9]{0,3}"
PERCENT = r"0*(?:100|[1-9][0-9]?)%"
_COUNT, _PERCENT = re.compile(COUNT), re.compile(PERCENT)


def unknown_keys(conf: Mapping[str, Any], known: Iterable[str]) -> list[str]:
    """The keys of ``conf`` the DAG's form does not have, sorted."""
    names = set(known)
    return sorted(str(k) for k in conf if k not in names)


def unknown_keys_message(dag_id: str, unknown: list[str], known: Iterable[str]) -> str:
    """``conf: unknown key 'dryrun' (did you mean 'dry_run'?); tars_deploy__demo knows: …``."""
    names = sorted(known)
    shown = []
    for key in unknown:
        close = difflib.get_close_matches(key, names, n=1, cutoff=HINT_CUTOFF)
        shown.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    noun = "key" if len(unknown) == 1 else "keys"
    return (f"conf: unknown {noun} {', '.join(shown)}; {dag_id} knows: "
            f"{', '.join(names) or 'no keys'}")


def check_run_conf(conf: Mapping[str, Any] | None, known: Iterable[str], dag_id: str) -> None:
    """Raise ``PlanError`` when ``conf`` has keys outside the DAG's form or a malformed version.

    The version is checked as given (not stripped): ``"2.0.0\\n"`` is refused, not trimmed
    into a release nobody asked for. ``""``/``"latest"`` are left to the latest pointer.
    """
    if not conf:
        return
    known = list(known)
    extra = unknown_keys(conf, known)
    if extra:
        raise PlanError(unknown_keys_message(dag_id, extra, known))
    version = conf.get("version")
    if version is not None and version not in LATEST:
        try:
            validate_version(version)
        except InvalidValue as exc:
            raise PlanError(f"params.version: {exc}") from None


def parse_batches(raw: Any) -> list[int | str] | None:
    """``"1, 25%, 100%"`` or a list → ramp sizes; empty → None (use the app's strategy)."""
    if raw is None or raw == [] or (isinstance(raw, str) and not raw.strip()):
        return None
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    out: list[int | str] = []
    for item in items:
        text = str(item).strip()
        if _PERCENT.fullmatch(text):
            out.append(f"{int(text[:-1])}%")
        elif _COUNT.fullmatch(text):
            out.append(int(text))
        else:
            raise PlanError(
                f"params.batches: expected sizes like 1, 25%, 100% separated by commas, got {text!r}"
            )
    return out
