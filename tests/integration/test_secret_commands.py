"""No secret on a command line: install commands that read a secret run from an uploaded script.

Against the sandbox's real sshd: every command sent over SSH is recorded (the session is
wrapped), the host's own ``ps`` is captured while a secret-reading command runs, and the
host's files are searched for the secret afterwards.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from sandbox import Sandbox
from tars_operators.config.schema import Secrets
from tars_operators.config.spec import AppSpec
from tars_operators.errors import TemplateRefused
from tars_operators.hooks.ssh import HostSession, open_session
from tars_operators.steps.stage import stage_release
from tests.integration.test_steps import demo_spec, root_of  # type: ignore[import-not-found]

pytestmark = pytest.mark.integration


class RecordingSession:
    """A HostSession whose every command (the text sent over SSH exec) is kept."""

    def __init__(self, session: HostSession) -> None:
        self._session = session
        self.commands: list[str] = []
        self.uploads: list[str] = []

    def run(self, command: str, **kwargs: Any) -> Any:
        self.commands.append(command)
        return self._session.run(command, **kwargs)

    def put_bytes(self, data: bytes, remote: str, **kwargs: Any) -> None:
        self.uploads.append(remote)
        self._session.put_bytes(data, remote, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def with_secrets(spec: AppSpec, *variables: str) -> AppSpec:
    return replace(spec, config=spec.config.model_copy(update={"secrets": Secrets(variables=variables)}))


def files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


def test_a_post_install_secret_runs_from_a_script_and_never_on_a_command_line(
    fleet: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    secret = f"seed-{secrets.token_hex(12)}"
    monkeypatch.setenv("AIRFLOW_VAR_APP_SEED", secret)
    spec = with_secrets(demo_spec(fleet, tmp_path / "config", install={
        "pre_install": ["echo '{{ version }}' > pre.txt"],
        "post_install": [
            "printf %s '{{ var.app_seed }}' | sha256sum | cut -d' ' -f1 > seed.sha256",
            # The host's own view while a secret-reading command runs.
            "test -n '{{ var.app_seed }}' && ps -eo args > ps.txt",
        ]}), "app_seed")
    host = spec.hosts[0]
    caplog.set_level(logging.DEBUG)
    with open_session(spec, host) as session:
        recorder = RecordingSession(session)
        result = stage_release(cast(HostSession, recorder), spec, host, "1.1.0", None, "r1")
    assert result.state == "ok"
    release = root_of(host) / "releases/1.1.0"
    assert (release / "seed.sha256").read_text().strip() == hashlib.sha256(secret.encode()).hexdigest()
    assert (release / "pre.txt").read_text() == "1.1.0\n"
    ps = (release / "ps.txt").read_text()
    assert secret not in ps
    assert "post_install-1.sh" in ps  # ps did see the script running
    # Not in any command sent over SSH: the secret commands ran as `sh -e <script>`, the
    # command without a secret inline, as written.
    assert recorder.commands and not [c for c in recorder.commands if secret in c]
    install = next(c for c in recorder.commands if "post_install-0.sh" in c)
    assert re.search(r"sh -e \S+/tpl-\w+/post_install-0\.sh", install)
    assert shlex.quote("echo '1.1.0' > pre.txt") in install
    assert sorted(Path(u).name for u in recorder.uploads if u.endswith(".sh")) == \
        ["post_install-0.sh", "post_install-1.sh"]
    # No script left behind, and the secret is in no file on the host and in no log line.
    assert not list(root_of(host).rglob("*.sh")) and not list(root_of(host).rglob("tpl-*"))
    assert files_holding(root_of(host), secret.encode()) == []
    assert secret not in caplog.text


def test_a_command_reading_an_unlisted_variable_fails_before_any_command_reaches_the_host(
    fleet: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_OTHER_APP_KEY", "other-app-key-123456")
    spec = with_secrets(demo_spec(fleet, tmp_path / "config", install={
        "post_install": ["echo '{{ var.other_app_key }}' > key.txt"]}), "app_seed")
    host = spec.hosts[1]
    with open_session(spec, host) as session:
        recorder = RecordingSession(session)
        with pytest.raises(TemplateRefused, match=r"^host02: stage: install.post_install\[0\]: expected a"
                                                  r" Variable listed in secrets.variables, got var.other_app_key;"):
            stage_release(cast(HostSession, recorder), spec, host, "1.1.0", None, "r1")
    assert recorder.commands == [] and recorder.uploads == []
    assert not (root_of(host) / "releases/1.1.0").exists()
