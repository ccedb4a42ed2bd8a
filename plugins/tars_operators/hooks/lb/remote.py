"""Where load-balancer commands run: on the controller (a local shell) or on a host over SSH.

A runner is ``(command, timeout) -> CommandOutput``. Providers take one as a constructor
argument, so tests can hand them a local runner and production code an SSH one.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import (
    HostUnreachable,
    LoadBalancerError,
    LoadBalancerUnreachable,
    RemoteCommandError,
    TarsError,
)

if TYPE_CHECKING:
    from tars_operators.hooks.ssh import HostSession


@dataclass(frozen=True)
class CommandOutput:
    """What a command run by a runner produced; exit_code None means it timed out."""

    exit_code: int | None
    stdout: str
    stderr: str


def local_runner(command: str, timeout: float) -> CommandOutput:
    """Run a shell command on the controller (bash -c), stdin closed."""
    try:
        proc = subprocess.run(["bash", "-c", command], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        return CommandOutput(None, "", err or "")
    return CommandOutput(proc.returncode, proc.stdout, proc.stderr)


def resolve_host(spec: AppSpec, name_or_address: str) -> Host:
    """An inventory host by name or address, else a bare host at that address (SSH port 22)."""
    for host in spec.hosts:
        if name_or_address in (host.name, host.address):
            return host
    return Host(name=name_or_address, address=name_or_address)


def _transient(exc: TarsError) -> bool:
    """SSH lost, refused or timed out: worth retrying. A rejected key or login is not."""
    import paramiko

    if isinstance(exc, RemoteCommandError):
        return exc.exit_code is None
    fatal = (paramiko.BadHostKeyException, paramiko.AuthenticationException)
    return isinstance(exc, HostUnreachable) and not isinstance(exc.__cause__, fatal) \
        and "host key" not in str(exc).lower()


class SSHRunner:
    """Runs commands on one host through the SSH hook; the session connects on first use."""

    def __init__(self, spec: AppSpec, host: Host, step: str) -> None:
        self.spec, self.host, self.step = spec, host, step
        self._session: HostSession | None = None

    def __call__(self, command: str, timeout: float) -> CommandOutput:
        # Imported here: the SSH hook pulls in Airflow; the pure LB code does not need it.
        from tars_operators.hooks.ssh import open_session

        if self._session is None:
            self._session = open_session(self.spec, self.host)
        try:
            result = self._session.run(command, step=self.step, timeout=timeout, check=False,
                                       label=command.splitlines()[0][:60])
        except TarsError as exc:  # HostUnreachable, RemoteCommandError (timeout), InvalidValue
            self.close()
            error = LoadBalancerUnreachable if _transient(exc) else LoadBalancerError
            raise error(f"{exc} (over SSH; the load balancer command did not run)") from exc
        return CommandOutput(result.exit_code, result.stdout, result.stderr)

    def close(self) -> None:
        """Close the SSH session if one is open."""
        if self._session is not None:
            self._session.close()
            self._session = None
