"""docs/production.md: every command in its ``sh`` blocks runs or is accepted by the real CLI.

``airflow config get-value`` runs for real (in a scratch AIRFLOW_HOME, with the block's
``export`` lines); every other ``airflow`` command is checked against the installed CLI's
``--help`` (the subcommand exists, each ``--option`` it uses is one the subcommand has);
``docker run … IMAGE airflow …`` checks its ``airflow`` part the same way (docker itself is not
on the test machine) and ``docker build`` needs the Dockerfile; ``./scripts/demo`` goes through
the demo's own argument parser.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sandbox.demo import parser as demo_parser

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "production.md"


def blocks() -> list[list[str]]:
    """The commands of each ``sh`` block (comments and blank lines dropped)."""
    found = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)
    return [[line.strip() for line in b.splitlines() if line.strip() and not
             line.strip().startswith("#")] for b in found]


def commands() -> list[tuple[list[str], dict[str, str]]]:
    """Each command as argv, with the env its block's ``export`` lines set before it."""
    out = []
    for block in blocks():
        env: dict[str, str] = {}
        for line in block:
            argv = shlex.split(line)
            if argv[0] == "export":
                name, value = argv[1].split("=", 1)
                env[name] = value
            else:
                out.append((argv, dict(env)))
    return out


def airflow_part(argv: list[str]) -> list[str] | None:
    if argv[0] == "airflow":
        return argv
    if argv[:2] == ["docker", "run"] and "airflow" in argv:
        return argv[argv.index("airflow"):]
    return None


def run_airflow(args: list[str], env: dict[str, str], home: Path) -> subprocess.CompletedProcess:
    full = {**os.environ, "AIRFLOW_HOME": str(home), **env,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"}
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=full,
                          capture_output=True, text=True, timeout=120)


def test_the_doc_has_the_commands_it_promises() -> None:
    lines = [" ".join(a) for a, _ in commands()]
    for expected in ("./scripts/demo --engine celery --ci", "airflow db migrate",
                     "airflow celery worker --queues default,dc1", "docker build -t tars:3.3.2 ."):
        assert any(line.startswith(expected) for line in lines), (expected, lines)


def test_every_command_in_docs_production_md_runs_or_is_accepted(tmp_path: Path) -> None:
    checks: list[tuple[str, list[str], dict[str, str], list[str]]] = []
    for argv, env in commands():
        shown = shlex.join(argv)
        if argv[0] == "./scripts/demo":
            demo_parser().parse_args(argv[1:])  # exits 2 on an unknown option
            continue
        if argv[:2] == ["docker", "build"]:
            assert (REPO / argv[-1] / "Dockerfile").exists(), shown
            continue
        af = airflow_part(argv)
        assert af is not None, f"{shown}: no check for this command; add one"
        if af[1:3] == ["config", "get-value"]:
            checks.append((shown, af[1:], env, []))
            continue
        options = [w.split("=", 1)[0] for w in af[1:] if w.startswith("--")]
        # Option values are not subcommands: keep the words before the first option.
        first_opt = next((i for i, w in enumerate(af[1:]) if w.startswith("-")), len(af) - 1)
        words = af[1:1 + first_opt]
        checks.append((shown, [*words, "--help"], env, options))

    def check(item: tuple[str, list[str], dict[str, str], list[str]]) -> str | None:
        shown, args, env, options = item
        done = run_airflow(args, env, tmp_path)
        if done.returncode != 0:
            return f"{shown}: exit {done.returncode}: {(done.stdout + done.stderr)[-600:]}"
        # Whole option names: argparse would accept a prefix, the doc should not rely on it.
        missing = [o for o in options
                   if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", done.stdout)]
        if missing:
            return f"{shown}: options not in `airflow {' '.join(args)}`: {missing}"
        return None

    assert len(checks) >= 10, checks
    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = [p for p in pool.map(check, checks) if p]
    assert not problems, "\n".join(problems)
