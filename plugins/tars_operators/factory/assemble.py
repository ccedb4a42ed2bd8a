"""``tars_assemble__<app>``: assemble → join (the way a new machine joins the app)."""

from __future__ import annotations

from pathlib import Path
from airflow.sdk import DAG, Param
from airflow.sdk.definitions.param import ParamsDict

from tars_operators.config.spec import AppSpec
from tars_operators.factory.builder import manual_dag, task_paths
from tars_operators.remote.validate import SAFE_VERSION


def build_assemble_dag(spec: AppSpec, *, defaults_path: Path | None = None) -> DAG:
    """Manual only, one run at a time; a dry run changes nothing."""
    from tars_operators.operators.assemble import (
        ASSEMBLE, JOIN, AssembleHostsOperator, JoinHostsOperator,
    )

    common = task_paths(spec, defaults_path)
    names = [h.name for h in spec.hosts]
    with DAG(
        **manual_dag(spec, "assemble"),
        doc_md=f"Make hosts of `{spec.name}` ready: run `runtime.assemble` (each step reports "
               f"changed or unchanged; a dry run only checks), check `runtime.requires`, then "
               f"with **install** put the version the other hosts run (or **version**) on them, "
               f"healthy and in rotation. No hosts listed: the hosts with no release yet.",
    ) as dag:
        assemble = AssembleHostsOperator(task_id=ASSEMBLE, **common)
        assemble >> JoinHostsOperator(task_id=JOIN, **common)
    dag.params = ParamsDict({
        "hosts": Param([], type="array", items={"type": "string", "enum": names},
                       uniqueItems=True, examples=names, title="Hosts",
                       description="Empty: the hosts with no release current (new hosts)",
                       section="Assemble"),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Only check what each step would change", section="Assemble"),
        "install": Param(False, type="boolean", title="Install and put in rotation",
                         section="Assemble"),
        "version": Param(None, type=["null", "string"],
                         pattern="^(?:" + SAFE_VERSION.pattern + ")$", title="Version",
                         description="Empty: the version the other hosts run as a good release",
                         section="Assemble"),
        "reason": Param("", type="string", title="Reason", section="Assemble"),
    })
    return dag
