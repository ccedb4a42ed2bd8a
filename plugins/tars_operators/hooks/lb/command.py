"""Any other load balancer (Consul, a cloud LB, F5…): the team's own commands, templated per host.

`drain` takes the host out, `enable` puts it back, `state` (optional) prints one of UP / DOWN /
DRAIN / MAINT, optionally followed by the number of active sessions ("DRAIN 3"). With a state
command, waits poll it. Without one nothing can be verified: a drain waits the whole
`traffic.drain_timeout` (requests in flight get that long to finish) and says it could not
verify; pull-in returns at once, "unverified". Commands run on the controller (bash) or on the
host itself over SSH (`run_on`). A command that times out, that cannot be started over SSH, or
that exits 75 (EX_TEMPFAIL: "try again") counts as the LB being unreachable and is retried
until `traffic.api_deadline`; any other non-zero exit is a refusal.
"""

from __future__ import annotations

import logging
import time

from tars_operators.config.schema import CommandLB
from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import LoadBalancerError, LoadBalancerUnreachable
from tars_operators.hooks.lb.base import UNKNOWN, Admin, LoadBalancer, ServerState, render_for_host
from tars_operators.hooks.lb.remote import CommandOutput, SSHRunner, local_runner
from tars_operators.hooks.lb.runtime_api import Runner

STATUSES: dict[str, Admin] = {"UP": "ready", "DOWN": "ready", "DRAIN": "drain", "MAINT": "maint"}
COMMAND_TIMEOUT = 60.0
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: the command asks to be tried again
log = logging.getLogger(__name__)


def parse_state_output(name: str, stdout: str) -> ServerState:
    """ServerState from a state command's first line: "<STATUS> [sessions]"."""
    words = (stdout.strip().splitlines() or [""])[0].split()
    status = words[0].upper() if words else ""
    if status not in STATUSES or len(words) > 2 or (len(words) == 2 and not words[1].isdigit()):
        raise LoadBalancerError(
            f"traffic.command.state for {name} printed {stdout.strip()[:100]!r}; "
            f"expected one of UP, DOWN, DRAIN, MAINT, optionally followed by a session count"
        )
    sessions = int(words[1]) if len(words) == 2 else None
    return ServerState(name, status, STATUSES[status], sessions)


class CommandBalancer(LoadBalancer):
    """User commands for drain / enable / state, rendered with the host's template context."""

    provider = "command"

    def __init__(self, spec: AppSpec, runner: Runner | None = None) -> None:
        super().__init__(spec)
        conf = spec.config.traffic.command
        if conf is None:
            raise LoadBalancerError("traffic.provider is command but traffic.command is not set")
        self.conf: CommandLB = conf
        self._fixed_runner = runner
        self._ssh: dict[str, SSHRunner] = {}

    def server_name(self, host: Host) -> str:
        return host.name

    def where(self) -> str:
        return f"traffic.command (run on the {self.conf.run_on})"

    def _runner(self, host: Host) -> Runner:
        if self._fixed_runner is not None:
            return self._fixed_runner
        if self.conf.run_on == "controller":
            return local_runner
        if host.name not in self._ssh:
            self._ssh[host.name] = SSHRunner(self.spec, host, "traffic command")
        return self._ssh[host.name]

    def close(self) -> None:
        for runner in self._ssh.values():
            runner.close()
        self._ssh.clear()

    def run(self, which: str, template: str, host: Host) -> CommandOutput:
        """Render and run one of the commands; raise with its output unless it exits 0."""
        command = render_for_host(self.spec, host, template, f"traffic.command.{which}")
        out = self._runner(host)(command, COMMAND_TIMEOUT)
        if out.exit_code != 0:
            what = "timed out" if out.exit_code is None else f"exit code {out.exit_code}"
            tail = "\n".join((out.stderr or out.stdout).strip().splitlines()[-10:])
            transient = out.exit_code in (None, EXIT_TEMPFAIL)
            raise (LoadBalancerUnreachable if transient else LoadBalancerError)(
                f"{host.name}: traffic.command.{which} failed ({what}, run on the "
                f"{self.conf.run_on}): {command!r}" + (f"\n{tail}" if tail else "")
            )
        return out

    def _drain(self, host: Host) -> None:
        self.run("drain", self.conf.drain, host)

    def _disable(self, host: Host) -> None:
        self.run("drain", self.conf.drain, host)

    def _enable(self, host: Host) -> None:
        self.run("enable", self.conf.enable, host)

    def _state(self, host: Host) -> ServerState:
        if self.conf.state is None:
            return ServerState(host.name, UNKNOWN, "unknown", None)
        return parse_state_output(host.name, self.run("state", self.conf.state, host).stdout)

    def wait_drained(self, host: Host, timeout: float) -> tuple[ServerState, bool]:
        """With `state`: poll it. Without: wait the whole drain_timeout, since nothing can tell."""
        if self.conf.state is not None:
            return super().wait_drained(host, timeout)
        log.warning("%s: traffic.command has no `state` command: cannot verify the drain; waiting "
                    "traffic.drain_timeout (%gs) for requests in flight", host.name, timeout)
        time.sleep(timeout)
        return self.state(host), False
