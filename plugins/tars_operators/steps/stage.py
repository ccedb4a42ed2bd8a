"""Stage a release on a host (before it leaves rotation): artifact in, unpacked, configured.

Atomic: everything happens in ``releases/.tmp-<version>-<rand>`` and one rename publishes it;
``current`` is never touched. Idempotent: the same sha256 already staged is a no-op.
"""

from __future__ import annotations

import re
import time
from typing import Literal

from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import (
    ChecksumMismatch,
    InsufficientSpace,
    InvalidValue,
    RemoteCommandError,
    RemoteError,
    UnsafeArchiveOnHost,
)
from tars_operators.hooks.artifacts import (
    FetchedArtifact, artifact_url, fetch_artifact, on_this_worker, sha256_file,
)
from tars_operators.hooks.ssh import HostSession
from tars_operators.remote.archive import check_archive
from tars_operators.remote.commands import (
    EXIT_NO_SPACE,
    EXIT_UNSAFE,
    InstallPlan,
    TemplateFile,
    install_command,
    q,
    write_meta_command,
)
from tars_operators.remote.layout import ReleaseLayout, rand_token
from tars_operators.remote.validate import validate_sha256, validate_version
from tars_operators.results import StepResult
from tars_operators.steps.policy import with_retries
from tars_operators.steps.state import HostState, ReleaseMeta, now_iso, read_host_state
from tars_operators.steps.templates import RenderedFile, Script, install_context, render_commands, render_templates

STEP: Literal["stage"] = "stage"


def stage_release(
    session: HostSession, spec: AppSpec, host: Host, version: str,
    artifact: FetchedArtifact | None, run_id: str,
) -> StepResult:
    """Get ``version`` onto ``host`` as ``releases/<version>`` with status ``staged``; a failed
    attempt is tried again ``steps.stage.retries`` times."""
    validate_version(version, spec.config.artifact.version_pattern)
    return with_retries(spec, host.name, STEP,
                        lambda _: _stage_once(session, spec, host, version, artifact, run_id))


def _stage_once(
    session: HostSession, spec: AppSpec, host: Host, version: str,
    artifact: FetchedArtifact | None, run_id: str,
) -> StepResult:
    started = time.monotonic()
    ctx = install_context(spec, host, version)
    layout = ReleaseLayout(ctx["deploy_root"])
    # fetch's copy may be on another worker: re-fetched here (sha256 verified) when missing
    artifact = on_this_worker(artifact, spec) if artifact else fetch_artifact(spec, version, host=host)
    unpacked = _check_artifact(artifact, version, spec)
    files = render_templates(spec, host, ctx)
    commands = render_commands(spec, host, ctx)
    # Everything above is local; the first remote call is here.
    state = read_host_state(session, layout, step=STEP, cleanup=True)
    done = _already_staged(session, layout, state, artifact, host, started)
    if done is not None:
        return done
    token = rand_token()
    pre, post, scripts = commands.lines(f"{layout.uploads}/tpl-{token}")
    plan = InstallPlan(
        layout=layout, version=version, token=token, tarball=layout.tarball(artifact.sha256),
        sha256=artifact.sha256, meta=_meta(spec, artifact, run_id), pre_install=pre, post_install=post,
        templates=_upload(session, layout, artifact, files, token, scripts),
        check_on_host=artifact.path is None, download_url=artifact_url(spec, version, host) if artifact.path is None else None,
        download_timeout=spec.config.ssh.command_timeout,
        cleanup=[f"{layout.uploads}/tpl-{token}"], limits=spec.config.artifact.limits, unpacked_bytes=unpacked,
    )
    _install(session, plan, spec.config.steps.stage.timeout or spec.config.ssh.command_timeout)
    how = "pushed" if artifact.path is not None else "pulled"
    return StepResult(host.name, STEP, "ok", version, time.monotonic() - started,
                      f"staged {version} ({how}, sha256 {artifact.sha256[:12]}…)",
                      {"sha256": artifact.sha256, "delivery": how, "replaced": state.release(version) is not None})


def _check_artifact(artifact: FetchedArtifact, version: str, spec: AppSpec) -> int:
    """Before any SSH: right version, sha256 of the local copy, archive safety and limits.

    Returns the bytes the archive unpacks to (push); 0 for pull, where the host checks it.
    """
    if artifact.version != version:
        raise InvalidValue(f"artifact is for version {artifact.version}, not {version}")
    validate_sha256(artifact.sha256)
    if artifact.path is not None:
        actual = sha256_file(artifact.path)
        if actual != artifact.sha256:
            raise ChecksumMismatch(f"{artifact.path}: sha256 is {actual}, expected {artifact.sha256}; "
                                   "refusing to send it to any host")
        return check_archive(artifact.path, spec.config.artifact.limits).unpacked_bytes
    return 0


def _install(session: HostSession, plan: InstallPlan, timeout: float) -> None:
    """Run the install command; the host's own refusals become typed errors."""
    result = session.run(install_command(plan), step=STEP, timeout=timeout, check=False,
                         label=f"install {plan.version} into {plan.layout.release_dir(plan.version)}")
    if result.exit_code == 0:
        return
    # A pre/post_install command may exit 66 or 70 too: that is its failure, not our refusal.
    last = (result.stderr.strip().splitlines() or [""])[-1]
    ours = not re.fullmatch(r"tars: (pre|post)_install #\d+ failed \(exit \d+\)", last)
    errors = {EXIT_UNSAFE: UnsafeArchiveOnHost, EXIT_NO_SPACE: InsufficientSpace} if ours else {}
    raise errors.get(result.exit_code, RemoteCommandError)(session.host, STEP, result.exit_code, result.stderr)


def _already_staged(
    session: HostSession, layout: ReleaseLayout, state: HostState, artifact: FetchedArtifact,
    host: Host, started: float,
) -> StepResult | None:
    """A result if nothing (or only metadata) needs doing; refuse to replace ``current``."""
    existing = state.release(artifact.version)
    if existing is None or existing.status == "unknown":
        if existing is not None and state.current == artifact.version:
            raise RemoteError(host.name, STEP, f"releases/{artifact.version} is current but has no "
                              "metadata; refusing to replace the release being served")
        return None
    if existing.sha256 != artifact.sha256:
        if state.current == artifact.version:
            raise RemoteError(host.name, STEP, (
                f"releases/{artifact.version} is the current release with a different sha256 "
                f"({(existing.sha256 or '?')[:12]}… on the host, {artifact.sha256[:12]}… now); "
                "refusing to replace the release being served — activate another release first"))
        return None
    seconds = time.monotonic() - started
    if existing.status == "failed":  # same bytes, tried again: eligible for activation again
        session.run(write_meta_command(layout, artifact.version, existing.with_(status="staged").as_json()),
                    step=STEP, label=f"mark {artifact.version} staged again")
        return StepResult(host.name, STEP, "ok", artifact.version, time.monotonic() - started,
                          f"{artifact.version} was marked failed; same sha256, marked staged again")
    return StepResult(host.name, STEP, "unchanged", artifact.version, seconds,
                      f"{artifact.version} already on the host ({existing.status}, same sha256)",
                      {"sha256": artifact.sha256, "status": existing.status})


def _upload(
    session: HostSession, layout: ReleaseLayout, artifact: FetchedArtifact,
    files: list[RenderedFile], token: str, scripts: list[Script],
) -> list[TemplateFile]:
    """Push the tarball (unless already complete on the host), the rendered templates and the
    scripts of commands that read secrets (0600, in a 0700 dir removed by the install command)."""
    tpl_dir = f"{layout.uploads}/tpl-{token}"
    if artifact.path is None and not files and not scripts:
        return []
    session.run(f"mkdir -p {q(tpl_dir)} && chmod 700 {q(layout.uploads)} {q(tpl_dir)}", step=STEP,
                label="prepare upload dir")
    if artifact.path is not None:
        target = layout.tarball(artifact.sha256)
        if session.remote_size(target) != (artifact.size or artifact.path.stat().st_size):
            session.put_file(artifact.path, target, step=STEP)
    staged = []
    for i, rendered in enumerate(files):
        path = f"{tpl_dir}/{i}"
        session.put_bytes(rendered.content, path, step=STEP)
        staged.append(TemplateFile(path, rendered.dest, rendered.mode))
    for script in scripts:
        session.put_bytes(script.content, script.path, step=STEP, mode=0o600)
    return staged


def _meta(spec: AppSpec, artifact: FetchedArtifact, run_id: str) -> dict[str, object]:
    meta = ReleaseMeta(version=artifact.version, sha256=artifact.sha256, installed_at=now_iso(),
                       run_id=run_id, status="staged", extra={"app": spec.name})
    return meta.as_json()
