"""The host-side guard, run for real by local shells the way sshd runs it (session leader, stdin a pipe)."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tars_operators.remote.watchdog import DEADLINE_GRACE, guarded, host_deadline
from tests.polling import poll  # type: ignore[import-not-found]

pytestmark = pytest.mark.unit
SHELLS = ["bash", "sh"]  # sh is dash here: the guard must stay POSIX


def live_in_session(sid: int) -> list[int]:
    """Pids of the session that are not zombies (a killed process may linger as one for a while)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:  # only what this test started, whole session, if a test failed midway
        for pid in live_in_session(proc.pid):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        proc.wait(5)


def spawn(shell: str, command: str, timeout: float, procs: list[subprocess.Popen[str]], **kw: object) -> subprocess.Popen[str]:
    """Like sshd: the shell leads its own session, stdin is a pipe the controller holds."""
    proc = subprocess.Popen([shell, "-c", guarded(command, timeout, **kw)],  # type: ignore[arg-type]
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    procs.append(proc)
    return proc


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    code = proc.wait(10)
    proc.stdin.close()  # type: ignore[union-attr]
    return code, out, err


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(("command", "expected"), [
    ("echo out; echo err >&2; exit 3", (3, "out\n", "err\n")),
    ("set -e\necho a\nfalse\necho never", (1, "a\n", "")),
    ("trap 'echo bye' EXIT; echo hi", (0, "hi\nbye\n", "")),
    ("cat; echo \"read: $?\"", (0, "read: 0\n", "")),  # stdin at EOF, as before
    ("cat <<'EOF'\n$HOME `x` ')'\nEOF\nexit 0 # trailing comment", (0, "$HOME `x` ')'\n", "")),
    ("exec sh -c 'exit 4'", (4, "", "")),
])
def test_output_and_exit_code_are_the_commands_own(
    shell: str, command: str, expected: tuple[int, str, str], started: list[subprocess.Popen[str]]
) -> None:
    assert finish(spawn(shell, command, 30, started)) == expected


@pytest.mark.parametrize("shell", SHELLS)
def test_a_syntax_error_is_still_reported(shell: str, started: list[subprocess.Popen[str]]) -> None:
    code, out, err = finish(spawn(shell, "echo ok; if then", 30, started))
    assert code == 2 and out == "" and "syntax error" in err.lower()


@pytest.mark.parametrize("shell", SHELLS)
def test_nothing_is_left_after_a_normal_end(shell: str, started: list[subprocess.Popen[str]]) -> None:
    proc = spawn(shell, "echo done", 30, started)
    assert finish(proc)[:2] == (0, "done\n")
    # The watcher's own helpers end at the stdin EOF finish() gave them.
    poll(lambda: not live_in_session(proc.pid), 5, "the guard's helpers to exit")


@pytest.mark.parametrize("shell", SHELLS)
def test_a_daemon_left_on_purpose_survives_a_normal_end(shell: str, started: list[subprocess.Popen[str]]) -> None:
    marker = f"tars-daemon-{secrets.token_hex(4)}"
    proc = spawn(shell, f"setsid sh -c 'sleep 30; : {marker}' </dev/null >/dev/null 2>&1 & echo started", 30, started)
    assert finish(proc)[:2] == (0, "started\n")
    pgrep = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    pids = [int(p) for p in pgrep.stdout.split()]
    assert pids, "the daemonised process was killed with the guard"
    for pid in pids:
        os.kill(pid, 9)


@pytest.mark.parametrize("shell", SHELLS)
def test_controller_gone_kills_the_whole_group(shell: str, started: list[subprocess.Popen[str]]) -> None:
    proc = spawn(shell, "sleep 300 & sh -c 'sleep 300; :'; echo never", 300, started)
    poll(lambda: len(live_in_session(proc.pid)) >= 5, 5, "the command and its children to start")
    began = time.monotonic()
    proc.stdin.close()  # type: ignore[union-attr]  # what a closed channel / cut connection / dead worker gives
    poll(lambda: not live_in_session(proc.pid), 5, "every process of the command to be killed")
    assert time.monotonic() - began < 3
    code = proc.wait(5)
    assert code != 0 and proc.stdout.read() == ""  # type: ignore[union-attr]


@pytest.mark.parametrize("shell", SHELLS)
def test_host_deadline_kills_the_group_even_with_the_controller_still_there(
    shell: str, started: list[subprocess.Popen[str]]
) -> None:
    # A command ignoring TERM, with a child: KILL follows TERM after kill_after seconds.
    proc = spawn(shell, "trap '' TERM; sleep 300 & sleep 300", 0.5, started, grace=0.5, kill_after=1)
    poll(lambda: len(live_in_session(proc.pid)) >= 4, 5, "the command and its children to start")
    began = time.monotonic()
    poll(lambda: not live_in_session(proc.pid), 10, "the host deadline to kill every process")
    assert 0.5 < time.monotonic() - began < 4  # deadline 1 s, then TERM, then KILL 1 s later
    assert proc.wait(5) != 0  # stdin was never closed


def test_without_timeout_on_the_host_commands_still_run_and_die_with_the_controller(
    tmp_path: Path, started: list[subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("cat", "sleep", "sh"):  # everything the guard and the command use, but `timeout`
        (bin_dir / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip())
    monkeypatch.setenv("PATH", str(bin_dir))
    proc = spawn("/bin/sh", "sleep 1; echo still here", 30, started)
    assert finish(proc) == (0, "still here\n", "")
    proc = spawn("/bin/sh", "sleep 300; echo never", 30, started)
    poll(lambda: len(live_in_session(proc.pid)) >= 4, 5, "the command to start")
    proc.stdin.close()  # type: ignore[union-attr]
    poll(lambda: not live_in_session(proc.pid), 5, "the command to be killed")


def test_host_deadline_is_the_timeout_plus_grace_in_whole_seconds() -> None:
    assert host_deadline(300) == 300 + DEADLINE_GRACE
    assert host_deadline(0.2, grace=0.5) == 1 and host_deadline(2.1, grace=0) == 3


def test_the_command_reaches_the_shell_as_one_quoted_word() -> None:
    hostile = "echo '$(touch pwned)'; `touch pwned2` \"$HOME\""
    text = guarded(hostile, 10)
    assert "( eval 'echo '\"'\"'$(touch pwned)'\"'\"'; `touch pwned2` \"$HOME\"' )" in text
    assert "timeout 15 cat <&3" in text
