"""Activate a staged release (also the rollback to a previous one), mark it, prune.

Activation: write metadata, stop, switch ``current`` atomically (new relative link +
``mv -T``), start, wait the ignition seconds. If ``current`` already resolves to the version
and the service says it is running, nothing is restarted (unless ``restart``); a restart of
the current release in place runs ``service.restart`` when the app sets it (else stop, start).

A release run records in the new release what it replaced and which run switched it; a
restore (rollback) records ``restored_by_run`` instead, so it never looks like a release.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from tars_operators.config.schema import Service
from tars_operators.config.spec import AppSpec, Host
from tars_operators.config.templating import host_context, render
from tars_operators.errors import InvalidValue, RemoteError
from tars_operators.hooks.ssh import HostSession
from tars_operators.remote.commands import activate_command, remove_releases_command, write_meta_command
from tars_operators.remote.layout import ReleaseLayout, rand_token
from tars_operators.remote.validate import validate_version
from tars_operators.results import StepResult
from tars_operators.steps.policy import with_retries
from tars_operators.steps.state import HostState, ReleaseMeta, now_iso, read_host_state, select_prunable


def activate_release(session: HostSession, spec: AppSpec, host: Host, version: str, run_id: str, *,
                     restore: bool = False, restart: bool = False) -> StepResult:
    """Make ``version`` the running release of ``host``.

    ``restore``: a rollback to a good or adopted release (any safe version name, even one
    another tool installed outside the app's pattern). ``restart``: stop and start even when
    it is current and its status command says it runs. A failed attempt is tried again
    ``steps.activate.retries`` times, each a restart (a half-started service is stopped first).
    """
    validate_version(version, None if restore else spec.config.artifact.version_pattern)
    return with_retries(spec, host.name, "activate", lambda attempt: _activate_once(
        session, spec, host, version, run_id, restore=restore, restart=restart or attempt > 0))


def _activate_once(session: HostSession, spec: AppSpec, host: Host, version: str, run_id: str, *,
                   restore: bool, restart: bool) -> StepResult:
    started = time.monotonic()
    ctx = host_context(spec, host, version)
    layout, service = ReleaseLayout(ctx["deploy_root"]), spec.config.service
    state = read_host_state(session, layout, step="activate")
    meta = _activatable(state, host, version, restore)
    if state.current == version and not restart and service_running(session, spec, host, version):
        return StepResult(host.name, "activate", "unchanged", version, time.monotonic() - started,
                          f"{version} already current and running")
    switch = state.current != version
    stop_ctx = host_context(spec, host, state.current) if state.current else ctx
    timeout = spec.config.steps.activate.timeout or spec.config.ssh.command_timeout
    session.run(activate_command(layout, version, rand_token(), stop=render(service.stop, stop_ctx),
                                 start=render(service.start, ctx), switch=switch, restart=restart,
                                 restart_command=_restart_command(service, ctx, switch, restart),
                                 meta=_new_meta(meta, state, run_id, switch=switch, restore=restore),
                                 adopt=_adoption(state, run_id) if switch else None),
                step="activate", timeout=timeout,
                label=f"{'switch current to' if switch else 'restart'} {version}")
    if service.ignition_seconds:
        time.sleep(service.ignition_seconds)
    was = state.current or state.foreign_current or "nothing"
    detail = (f"switched {was} → {version} and started" if switch
              else f"{version} was current; {'restarted' if restart else 'not running; started'}")
    return StepResult(host.name, "activate", "ok", version, time.monotonic() - started, detail,
                      {"previous": state.current, "restore": restore})


def _restart_command(service: Service, ctx: dict[str, Any], switch: bool, restart: bool) -> str | None:
    """``service.restart``, rendered, when the current release is restarted in place."""
    if switch or not restart or not service.restart:
        return None
    return render(service.restart, ctx)


def _activatable(state: HostState, host: Host, version: str, restore: bool) -> ReleaseMeta:
    meta = state.release(version)
    if meta is None or meta.status == "unknown":
        raise RemoteError(host.name, "activate", f"release {version} is not staged on this host; stage it first")
    if meta.status == "failed":
        raise RemoteError(host.name, "activate", f"release {version} is marked failed; stage it again first")
    if restore and not meta.is_target:
        raise RemoteError(host.name, "activate", f"release {version} is {meta.status}, not good or adopted; "
                          "a rollback only returns to a release that ran well")
    return meta


def _new_meta(meta: ReleaseMeta, state: HostState, run_id: str, *, switch: bool, restore: bool) -> dict[str, Any]:
    """A restore stamps ``restored_by_run``; a release that switches stamps its run and what it replaced."""
    if restore:
        extra = {**meta.extra, "restored_by_run": run_id, "restored_at": now_iso()}
        return meta.with_(extra=extra).as_json()
    if not switch:  # started again, not switched: the run that switched it keeps it
        return meta.with_(activated_at=meta.activated_at or now_iso()).as_json()
    extra = {**meta.extra, "activated_run_id": run_id, "replaced": state.current}
    return meta.with_(activated_at=now_iso(), extra=extra).as_json()


def _adoption(state: HostState, run_id: str) -> tuple[str, dict[str, Any]] | None:
    """Metadata for the current release when it has none (another tool's): ``adopted``."""
    old = state.current_meta
    if old is None or not old.derived:
        return None
    extra = {**old.extra, "adopted_at": now_iso(), "adopted_by_run": run_id}
    return old.version, old.with_(status="adopted", extra=extra).as_json()


def service_running(session: HostSession, spec: AppSpec, host: Host, version: str) -> bool:
    """The service's ``status`` command exits 0; without one, assume it runs."""
    status = spec.config.service.status
    if not status:
        return True
    result = session.run(render(status, host_context(spec, host, version)), step="activate",
                         check=False, label="service status")
    return result.exit_code == 0


def mark_release(
    session: HostSession, spec: AppSpec, host: Host, version: str,
    status: Literal["good", "failed", "staged"],
) -> StepResult:
    """Record the verdict on a release in its metadata (``good`` after health + smoke)."""
    started = time.monotonic()
    validate_version(version, spec.config.artifact.version_pattern)
    if status not in ("good", "failed", "staged"):
        raise InvalidValue(f"release status must be good, failed or staged, got {status!r}")
    layout = ReleaseLayout(host_context(spec, host, None)["deploy_root"])
    meta = read_host_state(session, layout, step="mark").release(version)
    if meta is None or meta.status == "unknown":
        raise RemoteError(host.name, "mark", f"release {version} is not on this host")
    if meta.status == status:
        return StepResult(host.name, "mark", "unchanged", version, time.monotonic() - started,
                          f"{version} already {status}")
    extra = {**meta.extra, "marked_at": now_iso()}
    session.run(write_meta_command(layout, version, meta.with_(status=status, extra=extra).as_json()),
                step="mark", label=f"mark {version} {status}")
    return StepResult(host.name, "mark", "ok", version, time.monotonic() - started,
                      f"{version}: {meta.status} → {status}")


def prune_releases(session: HostSession, spec: AppSpec, host: Host, *, keep: int | None = None) -> StepResult:
    """Keep the last ``keep`` good releases (default ``install.keep_releases``) and current."""
    started = time.monotonic()
    keep = keep if keep is not None else spec.config.install.keep_releases
    layout = ReleaseLayout(host_context(spec, host, None)["deploy_root"])
    state = read_host_state(session, layout, step="prune")
    doomed = select_prunable(state, keep)
    if not doomed:
        return StepResult(host.name, "prune", "unchanged", state.current, time.monotonic() - started,
                          f"nothing to prune ({len(state.releases)} releases)")
    session.run(remove_releases_command(layout, doomed, rand_token()), step="prune",
                label=f"remove {len(doomed)} releases")
    return StepResult(host.name, "prune", "ok", state.current, time.monotonic() - started,
                      f"removed {', '.join(doomed)}", {"removed": doomed})
