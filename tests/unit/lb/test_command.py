"""The `command` provider: rendering per host, state parsing, failures with their output."""

from __future__ import annotations

from pathlib import Path

import pytest

from tars_operators.errors import LoadBalancerError
from tars_operators.hooks.lb.command import CommandBalancer, parse_state_output
from tars_operators.hooks.lb.remote import CommandOutput
from tests.unit.lb.conftest import MakeSpec

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("out", "status", "admin", "sessions"), [
    ("UP\n", "UP", "ready", None), ("drain 3\n", "DRAIN", "drain", 3),
    ("MAINT 0\nextra line\n", "MAINT", "maint", 0), ("DOWN", "DOWN", "ready", None),
])
def test_state_output(out: str, status: str, admin: str, sessions: int | None) -> None:
    state = parse_state_output("host01", out)
    assert (state.status, state.admin, state.sessions) == (status, admin, sessions)


@pytest.mark.parametrize("out", ["", "healthy", "UP 1/2", "UP 3 4", "OK"])
def test_state_output_must_be_a_known_status(out: str) -> None:
    with pytest.raises(LoadBalancerError, match="expected one of UP, DOWN, DRAIN, MAINT"):
        parse_state_output("host01", out)


def _recording(replies: dict[str, CommandOutput] | None = None):
    sent: list[str] = []

    def runner(command: str, timeout: float) -> CommandOutput:
        sent.append(command)
        for key, reply in (replies or {}).items():
            if key in command:
                return reply
        return CommandOutput(0, "UP 0\n", "")

    return sent, runner


def test_commands_are_rendered_with_the_host_context(make_spec: MakeSpec) -> None:
    spec = make_spec({"provider": "command", "command": {
        "drain": "lbctl drain {{ host.name }} {{ host.address }}:{{ vars.app_port }}",
        "enable": "lbctl enable {{ host.name }} --pool {{ vars.pool }}",
        "state": "lbctl state {{ host.name }}"}}, pool="web")
    sent, runner = _recording()
    lb = CommandBalancer(spec, runner=runner)
    host = spec.hosts[2]
    lb.drain(host)
    lb.enable(host)
    assert lb.state(host).status == "UP"
    assert sent == ["lbctl drain host03 127.0.0.13:18080", "lbctl enable host03 --pool web",
                    "lbctl state host03"]


def test_failure_names_host_command_exit_code_and_stderr(make_spec: MakeSpec) -> None:
    spec = make_spec({"provider": "command", "command": {"drain": "lbctl drain {{ host.name }}",
                                                         "enable": "x"}})
    _, runner = _recording({"drain": CommandOutput(4, "", "lbctl: pool locked\n")})
    with pytest.raises(LoadBalancerError) as err:
        CommandBalancer(spec, runner=runner).drain(spec.hosts[0])
    assert str(err.value) == ("host01: traffic.command.drain failed (exit code 4, run on the "
                              "controller): 'lbctl drain host01'\nlbctl: pool locked")


def test_without_state_command_state_is_unknown(make_spec: MakeSpec) -> None:
    spec = make_spec({"provider": "command", "command": {"drain": "true", "enable": "true"}})
    state = CommandBalancer(spec).state(spec.hosts[0])
    assert not state.known and state.in_service


def test_controller_commands_really_run(make_spec: MakeSpec, tmp_path: Path) -> None:
    log = tmp_path / "lb.log"
    spec = make_spec({"provider": "command", "command": {
        "drain": f"echo drain {{{{ host.name }}}} >> {log}",
        "enable": f"echo enable {{{{ host.name }}}} >> {log}",
        "state": f"tail -1 {log} | grep -q drain && echo DRAIN 0 || echo UP 0"}})
    lb = CommandBalancer(spec)
    lb.drain(spec.hosts[0])
    assert lb.state(spec.hosts[0]).status == "DRAIN"
    lb.enable(spec.hosts[0])
    assert lb.state(spec.hosts[0]).status == "UP"
    assert log.read_text() == "drain host01\nenable host01\n"
