"""Typed errors. Each says what failed, where (file/field or host/step) and what to do next."""

from __future__ import annotations


class TarsError(Exception):
    """Base of every error Tars raises on purpose."""


class ConfigError(TarsError):
    """An app config is invalid; ``errors`` holds every problem found in the file."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class PlanError(TarsError):
    """Run parameters or the strategy cannot produce a valid plan (nothing was touched)."""


class InvalidValue(TarsError):
    """A value (version, host, path) failed validation before any remote call."""


class RemoteError(TarsError):
    """A step on a host failed. The message names the host, the step and what happened."""

    def __init__(self, host: str, step: str, message: str):
        self.host, self.step = host, step
        super().__init__(f"{host}: {step}: {message}")


class RemoteCommandError(RemoteError):
    def __init__(self, host: str, step: str, exit_code: int | None, stderr: str, command: str = ""):
        self.exit_code = exit_code
        tail = "\n".join(stderr.strip().splitlines()[-10:])
        what = f"exit code {exit_code}" if exit_code is not None else "timed out"
        super().__init__(host, step, f"{what}" + (f"; last lines of stderr:\n{tail}" if tail else ""))


class RemoteCommandTimeout(RemoteCommandError):
    """A command ran past its timeout; its process group on the host was killed with it."""

    def __init__(self, host: str, step: str, timeout: float, stderr: str = ""):
        self.exit_code, self.timeout = None, timeout
        tail = "\n".join(stderr.strip().splitlines()[-10:])
        RemoteError.__init__(self, host, step, f"timed out after {timeout:g}s; the remote process group "
                             "was killed (TERM, then KILL)" + (f"; last lines of stderr:\n{tail}" if tail else ""))


class HostUnreachable(RemoteError):
    """Could not connect (refused, timed out, host key rejected, auth failed)."""


class ArtifactUnavailable(TarsError):
    """The artifact server could not be reached or answered 5xx/429: worth retrying a while."""


class ChecksumMismatch(TarsError):
    """The artifact's sha256 differs from the expected one; nothing reached any host."""


class UnsafeArchive(TarsError):
    """The artifact could write outside its release, ship Tars's metadata, special files or bits,
    or exceeds ``artifact.limits``; nothing was unpacked. The message names the members."""


class UnsafeArchiveOnHost(RemoteCommandError, UnsafeArchive):
    """The host's own check refused the archive (pull delivery, or a template dest leading out
    of the release); the tarball was removed, nothing was unpacked."""


class InsufficientSpace(RemoteCommandError):
    """Too little free space under ``deploy_root`` to unpack the release and keep
    ``artifact.limits.min_free_mb``; the tarball was removed, nothing was unpacked."""


class HealthCheckFailed(RemoteError):
    """A health or smoke check did not pass in time; carries the last response seen."""


class LoadBalancerError(TarsError):
    """The load balancer refused a change, is unreachable, or does not know the server."""


class LoadBalancerUnreachable(LoadBalancerError):
    """The LB's API could not be reached (socket gone, refused, busy, timed out, SSH lost).

    Transports raise it per attempt; the LB base retries it until ``traffic.api_deadline``.
    """


class CapacityError(TarsError):
    """Taking these hosts out would leave fewer in service than ``min_in_service`` allows."""


class LeaseHeld(RemoteError):
    """Another run holds the host's lease; the message names it, its phase, since when, what next."""

    def __init__(self, host: str, step: str, message: str, *, holder: str = "", phase: str = ""):
        self.holder, self.phase = holder, phase
        super().__init__(host, step, message)


class LeaseLost(RemoteError):
    """The run's lease on a host is gone (released or taken over): it must stop changing the host."""


class TemplateRefused(InvalidValue):
    """A template reads a secret its app does not list (``secrets``), or its source lies outside
    the config repository; the message names the template and the name or path."""


class AnalysisError(TarsError):
    """Canary analysis could not read its numbers (a metrics API or the LB's counters)."""


class PoolError(TarsError):
    """The Airflow pool of ``traffic.pool`` is missing and could not be made or checked."""
