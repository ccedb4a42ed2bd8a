"""The DAG file's work: load every app config, build the DAGs, surface broken configs.

A broken config never hides the other apps: it becomes one entry in Airflow's DAG import
errors (with the loader's exact ``file:line:col`` messages) while every good app's DAG loads.
When Airflow's parsing context names one DAG (a task starting), only that DAG is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from airflow.sdk import DAG

from tars_operators.config.loader import load_all, load_files
from tars_operators.errors import ConfigError

PREFIXES = ("tars_deploy__", "tars_canary__", "tars_rollback__", "tars_inspect__")


class BrokenConfigs(DAG):
    """Stands for the configs that failed to load: bagging it records an import error."""

    def validate(self) -> None:
        raise ConfigError(self.doc_md.splitlines() if self.doc_md else [])


def _wanted(only: str | None) -> str | None:
    """The app name a parsing context asks for (None: build everything)."""
    if not only:
        return None
    for prefix in PREFIXES:
        if only.startswith(prefix):
            return only[len(prefix):]
    return ""  # some other DAG: build nothing


def build_all(config_dir: Path, *, only: str | None = None, base_dir: Path | None = None) -> dict[str, Any]:
    """``{dag_id: DAG}`` for the module's globals."""
    from tars_operators.factory.builder import build_dag, build_inspect_dag, build_rollback_dag

    app = _wanted(only)
    if app == "":
        return {}
    config_dir = Path(config_dir)
    result = None
    if app:  # by convention apps/<name>.yaml; fall back to loading every file
        guess = [p for p in (config_dir / f"{app}.yaml", config_dir / f"{app}.yml") if p.is_file()]
        if guess:
            result = load_files(guess, base_dir=base_dir)
            if app not in result.specs:
                result = None
    if result is None:
        result = load_all(config_dir, base_dir=base_dir)
    dags: dict[str, Any] = {}
    for name, spec in sorted(result.specs.items()):
        if app and name != app:
            continue
        kinds: dict[str, Callable[[], DAG]] = {
                 "deploy": lambda: build_dag(spec),
                 "rollback": lambda: build_rollback_dag(spec),
                 "inspect": lambda: build_inspect_dag(spec)}
        if spec.config.schedule.canary is not None:
            kinds["canary"] = lambda: build_dag(spec, canary=True)
        for kind, make in kinds.items():
            dag_id = f"tars_{kind}__{name}"
            if only and only != dag_id:
                continue
            dags[dag_id] = make()
    if result.errors and not app:
        lines = [line for err in result.errors.values() for line in err.errors]
        dags["tars_broken_configs"] = BrokenConfigs(dag_id="tars_broken_configs", schedule=None,
                                                    doc_md="\n".join(lines))
    return dags
