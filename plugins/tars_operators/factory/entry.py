"""The DAG file's work: load every app config, build the DAGs, surface broken configs.

A broken config never hides the other apps: it becomes one entry in Airflow's DAG import
errors (with the loader's exact ``file:line:col`` messages) while every good app's DAG loads.
When Airflow's parsing context names one DAG (a task starting), only that DAG is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from airflow.sdk import DAG

from tars_operators.config.finder import find_app
from tars_operators.config.loader import load_all
from tars_operators.errors import ConfigError

PREFIXES = ("tars_deploy__", "tars_canary__", "tars_rollback__", "tars_inspect__",
            "tars_assemble__")


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


def _has_runtime(spec: Any) -> bool:
    rt = spec.config.runtime
    return bool(rt.requires or rt.assemble) or any(
        g.runtime is not None for g in spec.config.hosts.groups.values())


def build_all(config_dir: Path, *, only: str | None = None, base_dir: Path | None = None) -> dict[str, Any]:
    """``{dag_id: DAG}`` for the module's globals."""
    from tars_operators.factory.builder import build_dag, build_inspect_dag, build_rollback_dag
    from tars_operators.factory.assemble import build_assemble_dag

    app = _wanted(only)
    if app == "":
        return {}
    config_dir = Path(config_dir)
    if app:  # only the app asked for, found the way the routes and `tars plan` find it
        found = find_app(config_dir, app, base_dir=base_dir)
        specs, errors = ({app: found.spec} if found.spec is not None else {}), []
    else:
        result = load_all(config_dir, base_dir=base_dir)
        specs = result.specs
        errors = [line for err in result.errors.values() for line in err.errors]
    dags: dict[str, Any] = {}
    for name, spec in sorted(specs.items()):
        if app and name != app:
            continue
        kinds: dict[str, Callable[[], DAG]] = {
                 "deploy": lambda: build_dag(spec),
                 "rollback": lambda: build_rollback_dag(spec),
                 "inspect": lambda: build_inspect_dag(spec)}
        if _has_runtime(spec):  # apps that say what a host needs get tars_assemble__<app>
            kinds["assemble"] = lambda: build_assemble_dag(spec)
        if spec.config.schedule.canary is not None:
            kinds["canary"] = lambda: build_dag(spec, canary=True)
        for kind, make in kinds.items():
            dag_id = f"tars_{kind}__{name}"
            if only and only != dag_id:
                continue
            dags[dag_id] = make()
    if errors:
        dags["tars_broken_configs"] = BrokenConfigs(dag_id="tars_broken_configs", schedule=None,
                                                    doc_md="\n".join(errors))
    return dags
