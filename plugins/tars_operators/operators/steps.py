"""One operator per release stage, for DAGs of your own (docs/operators.md).

Each calls the same step function as Tars's own per-host chain (``release/hostflow.py``):
it loads the app spec (``spec_loader`` callable, or ``spec_path`` through the config loader),
opens one SSH session to the host (or the app's load balancer), runs the step and returns
``StepResult.as_dict()`` (XCom). A failed step raises its typed TarsError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from airflow.sdk import BaseOperator

from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import InvalidValue
from tars_operators.redaction import redact_url
from tars_operators.results import StepResult

if TYPE_CHECKING:
    from airflow.sdk import Context

SpecLoader = Callable[[], AppSpec]


def load_spec(spec_loader: SpecLoader | None, spec_path: str | None, defaults_path: str | None = None) -> AppSpec:
    """The AppSpec from a callable, or from a config file via ``config.loader.load_app``."""
    if spec_loader is not None:
        return spec_loader()
    if not spec_path:
        raise InvalidValue("give spec_loader or spec_path")
    from tars_operators.config.loader import load_app

    return load_app(spec_path, defaults_path)


def find_host(spec: AppSpec, name: str) -> Host:
    try:
        return spec.host(name)
    except KeyError:
        raise InvalidValue(f"host {name!r} is not in the inventory of {spec.name}") from None


class TarsStepOperator(BaseOperator):
    """Common arguments: which app (spec), which host, which version."""

    template_fields: Sequence[str] = ("version", "host_name")

    def __init__(self, *, version: str, host_name: str | None = None, spec_loader: SpecLoader | None = None,
                 spec_path: str | None = None, defaults_path: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if spec_loader is None and not spec_path:
            raise InvalidValue(f"{self.task_id}: give spec_loader or spec_path")
        self.version, self.host_name = version, host_name
        self.spec_loader, self.spec_path, self.defaults_path = spec_loader, spec_path, defaults_path

    def spec_and_host(self) -> tuple[AppSpec, Host]:
        spec = load_spec(self.spec_loader, self.spec_path, self.defaults_path)
        if not self.host_name:
            raise InvalidValue(f"{self.task_id}: host_name is required")
        return spec, find_host(spec, self.host_name)

    def run_step(self, step: Callable[..., StepResult], *args: Any, **kwargs: Any) -> dict[str, Any]:
        from tars_operators.hooks.ssh import open_session

        spec, host = self.spec_and_host()
        with open_session(spec, host) as session:
            return self.done(step(session, spec, host, *args, **kwargs))

    def done(self, result: StepResult) -> dict[str, Any]:
        self.log.info("%s: %s: %s (%s, %.1fs)", result.host, result.step, result.detail, result.state, result.seconds)
        return result.as_dict()


class FetchArtifactOperator(TarsStepOperator):
    """Resolve the artifact and (push delivery) download it once into the controller cache."""

    def __init__(self, *, cache_dir: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        from pathlib import Path

        from tars_operators.hooks.artifacts import fetch_artifact

        spec = load_spec(self.spec_loader, self.spec_path, self.defaults_path)
        art = fetch_artifact(spec, self.version, cache_dir=Path(self.cache_dir) if self.cache_dir else None)
        result = StepResult("controller", "fetch", "ok", self.version, art.seconds,
                            f"{redact_url(art.url)} sha256 {art.sha256[:12]}…", {"artifact": art.as_dict()})
        return result.as_dict()


class StageReleaseOperator(TarsStepOperator):
    """Stage the release on one host; ``artifact`` is a FetchArtifactOperator result (XCom)."""

    template_fields = (*TarsStepOperator.template_fields, "artifact")

    def __init__(self, *, artifact: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.artifact = artifact

    def execute(self, context: Context) -> dict[str, Any]:
        from tars_operators.hooks.artifacts import FetchedArtifact
        from tars_operators.steps.stage import stage_release

        data = self.artifact or {}
        data = data.get("data", {}).get("artifact", data) if "data" in data else data
        art = FetchedArtifact.from_dict(data) if data else None
        return self.run_step(stage_release, self.version, art, context["run_id"])


class PullOutOperator(TarsStepOperator):
    """Take the host out of rotation: refused below ``traffic.min_in_service``, drain verified."""

    def __init__(self, *, version: str = "", **kwargs: Any):
        super().__init__(version=version, **kwargs)

    def execute(self, context: Context) -> dict[str, Any]:
        from tars_operators.hooks.lb.provider import load_balancer_for
        from tars_operators.steps.traffic import check_capacity, pull_out

        spec, host = self.spec_and_host()
        with load_balancer_for(spec) as lb:
            check_capacity(lb, spec, [host.name])
            return self.done(pull_out(lb, spec, host))


class PullInOperator(TarsStepOperator):
    """Put the host back in rotation and wait until the load balancer reports it UP."""

    def __init__(self, *, version: str = "", **kwargs: Any):
        super().__init__(version=version, **kwargs)

    def execute(self, context: Context) -> dict[str, Any]:
        from tars_operators.hooks.lb.provider import load_balancer_for
        from tars_operators.steps.traffic import pull_in

        spec, host = self.spec_and_host()
        with load_balancer_for(spec) as lb:
            return self.done(pull_in(lb, spec, host))


class ActivateReleaseOperator(TarsStepOperator):
    """Stop, switch ``current``, start (no-op if already current and running)."""

    def execute(self, context: Context) -> dict[str, Any]:
        from tars_operators.steps.activate import activate_release

        return self.run_step(activate_release, self.version, context["run_id"])


class SmokeTestOperator(TarsStepOperator):
    """Run the app's smoke checks once each; their output is in the result's ``data``."""

    def execute(self, context: Context) -> dict[str, Any]:
        from tars_operators.steps.checks import run_checks

        return self.run_step(run_checks, self.version, kind="smoke")


class MarkReleaseOperator(TarsStepOperator):
    """Record ``good`` / ``failed`` in the release's metadata on the host (rollback targets read it)."""

    def __init__(self, *, status: str = "good", **kwargs: Any):
        super().__init__(**kwargs)
        self.status = status

    def execute(self, context: Context) -> dict[str, Any]:
        from tars_operators.steps.activate import mark_release

        return self.run_step(mark_release, self.version, self.status)


class PruneReleasesOperator(TarsStepOperator):
    """Keep the last ``install.keep_releases`` good releases (never current)."""

    def __init__(self, *, keep: int | None = None, version: str = "", **kwargs: Any):
        super().__init__(version=version, **kwargs)
        self.keep = keep

    def execute(self, context: Context) -> dict[str, Any]:
        from tars_operators.steps.activate import prune_releases

        return self.run_step(prune_releases, keep=self.keep)
