"""A new host joins the app: the app's good version installed, healthy, smoke-tested, in rotation.

The steps are the release chain's own (``steps/``), inline (no deferral: the assemble DAG's
task works on its few hosts at once). A host that already runs the version, marked good and in
rotation, is left alone and reported ``unchanged``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import PlanError
from tars_operators.results import StepResult
from tars_operators.tasklog import TaskLog

if TYPE_CHECKING:
    from tars_operators.hooks.artifacts import FetchedArtifact
    from tars_operators.release.leases import RunLease
    from tars_operators.release.truth import HostTruth

log_ = logging.getLogger(__name__)


def good_version(spec: AppSpec, exclude: Sequence[str], truth: dict[str, HostTruth]) -> str:
    """The version most of the app's other hosts run as a good (or adopted) release."""
    seen = Counter(t.current for name, t in truth.items()
                   if name not in exclude and t.good and t.current)
    if not seen:
        raise PlanError(f"no other host of {spec.name} runs a good release to copy; give "
                        "params.version")
    return seen.most_common(1)[0][0]


def already_joined(truth: HostTruth | None, version: str) -> bool:
    return truth is not None and truth.on(version) and truth.good and truth.in_service


def join_host(spec: AppSpec, host: Host, version: str, artifact: FetchedArtifact | None,
              run_id: str, *, lease: RunLease | None = None,
              log: TaskLog = log_) -> list[StepResult]:
    """Stage, activate, health, smoke, mark good, pull in (verified UP); the host's lease held."""
    from tars_operators.hooks.lb.provider import load_balancer_for
    from tars_operators.hooks.ssh import open_session
    from tars_operators.release.leases import give_back, take
    from tars_operators.steps.activate import activate_release, mark_release
    from tars_operators.steps.checks import run_checks
    from tars_operators.steps.stage import stage_release
    from tars_operators.steps.traffic import pull_in, pull_out

    results: list[StepResult] = []

    def add(result: StepResult) -> None:
        results.append(result)
        log.info("%s %s: %s (%.2fs) %s", host.name, result.step, result.state, result.seconds,
                 result.detail)

    with open_session(spec, host) as session:
        take(session, spec, host, lease, phase="staging", version=version, log=log)
        try:
            add(stage_release(session, spec, host, version, artifact, run_id))
            with load_balancer_for(spec) as lb:  # a new host is out already: "unchanged"
                add(pull_out(lb, spec, host))
            add(activate_release(session, spec, host, version, run_id))
            add(run_checks(session, spec, host, version, list(spec.config.health), kind="health"))
            add(run_checks(session, spec, host, version, kind="smoke"))
            add(mark_release(session, spec, host, version, "good"))
            with load_balancer_for(spec) as lb:
                add(pull_in(lb, spec, host))
        finally:
            give_back(session, spec, host, lease.holder if lease else None, log=log)
    return results
