from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tars_operators.remote.commands import (
    EXIT_IS_CURRENT,
    InstallPlan,
    install_command,
    remove_releases_command,
    state_command,
)
from tars_operators.errors import InvalidValue
from tars_operators.remote.layout import ReleaseLayout
from tars_operators.steps.state import HostState, ReleaseMeta, parse_state, previous_good, select_prunable

pytestmark = pytest.mark.unit


def meta(version: str, status: str, activated: str | None = None, installed: str = "2024-01-01T00:00:00Z") -> ReleaseMeta:
    return ReleaseMeta(version=version, sha256="a" * 64, installed_at=installed, activated_at=activated,
                       status=status)  # type: ignore[arg-type]


def framed(tok: str, *lines: tuple[str, str | bytes]) -> str:
    """State output as ``state_command`` prints it: ``@@<tok> <key> <hex>`` lines, then ``end``."""
    body = [f"@@{tok} {key} {(v.encode() if isinstance(v, str) else v).hex()}" for key, v in lines]
    return "\n".join([f"@@tars-state {tok}", *body, f"@@{tok} end"]) + "\n"


def test_parse_state_output() -> None:
    body = json.dumps({"version": "1.0.0", "sha256": "b" * 64, "status": "good", "activated_at": "2024-01-01T00:00:00Z"})
    out = framed("abcd", ("releases", "/srv/app/releases"), ("current", "/srv/app/releases/1.0.0"),
                 ("link", "releases/1.0.0"), ("release", "1.0.0"), ("meta", body), ("release", "2.0.0"),
                 ("release", "bad;name"), ("meta", "{}"))
    state = parse_state(out)
    assert state.current == "1.0.0" and state.link == "releases/1.0.0"
    assert [(r.version, r.status) for r in state.releases] == [("1.0.0", "good"), ("2.0.0", "unknown")]


GOOD = {"version": "2.0.0", "sha256": "c" * 64, "status": "good", "activated_at": "2030-01-01T00:00:00Z"}
CORRUPT = {
    "not an object": b"[1, 2]",
    "a string": b'"good"',
    "NaN": json.dumps({**GOOD, "run_id": float("nan")}).encode(),
    "status not a string": json.dumps({**GOOD, "status": ["good"]}).encode(),
    "unknown status": json.dumps({**GOOD, "status": "excellent"}).encode(),
    "sha256 not hex": json.dumps({**GOOD, "sha256": "x" * 64}).encode(),
    "time not a string": json.dumps({**GOOD, "activated_at": 5}).encode(),
    "replaced not a string": json.dumps({**GOOD, "replaced": {"v": 1}}).encode(),
    "another version": json.dumps({**GOOD, "version": "1.0.0"}).encode(),
    "too long": json.dumps({**GOOD, "pad": "x" * (64 << 10)}).encode(),
    "deeply nested": b'{"a": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",  # within 64 KiB, too deep to parse
    "not UTF-8": json.dumps(GOOD).encode()[:-1] + b"\xff}",
    "two objects": (json.dumps(GOOD) + "\n" + json.dumps(GOOD)).encode(),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_a_corrupt_release_json_is_unknown_never_a_target(case: str) -> None:
    out = framed("abcd", ("releases", "/srv/app/releases"), ("current", "/srv/app/releases/1.0.0"),
                 ("release", "1.0.0"), ("meta", json.dumps({**GOOD, "version": "1.0.0"})),
                 ("release", "2.0.0"), ("meta", CORRUPT[case]))
    state = parse_state(out)
    assert state.release("2.0.0") == ReleaseMeta(version="2.0.0")  # status unknown, nothing read
    assert previous_good(state, exclude="1.0.0") is None and state.current == "1.0.0"


def test_state_output_without_its_end_marker_is_refused() -> None:
    out = framed("abcd", ("releases", "/srv/app/releases"), ("current", "/srv/app/releases/1.0.0"))
    with pytest.raises(InvalidValue, match="incomplete"):
        parse_state(out.replace("@@abcd end\n", ""))
    with pytest.raises(InvalidValue, match="garbled 'current' line"):
        parse_state(out.replace("current ", "current /srv/app/releases/2.0.0 "))


def sh(command: str, cwd: Path) -> str:
    result = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return result.stdout


def host_state(root: Path) -> HostState:
    return parse_state(sh(state_command(ReleaseLayout(str(root))), root.parent))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A deploy root laid out by "another tool": two releases, no Tars metadata at all."""
    root = tmp_path / "it's $(x) app"
    for v in ("1.0.0", "2.0.0"):
        (root / "releases" / v / "bin").mkdir(parents=True)
    return root


@pytest.mark.parametrize("link", ["relative", "absolute", "dotted", "chained", "through a linked root"])
def test_current_is_the_release_the_link_resolves_to(root: Path, tmp_path: Path, link: str) -> None:
    target = root / "releases" / "1.0.0"
    if link == "relative":
        (root / "current").symlink_to("releases/1.0.0")
    elif link == "absolute":
        (root / "current").symlink_to(target)
    elif link == "dotted":
        (root / "current").symlink_to("./releases/../releases/1.0.0/")
    elif link == "chained":
        (root / "live").symlink_to(target)
        (root / "current").symlink_to(root / "live")
    else:  # the deploy root itself is reached through a link, current is absolute to the real path
        (root / "current").symlink_to(target)
        alias = tmp_path / "alias"
        alias.symlink_to(root)
        root = alias
    state = host_state(root)
    assert state.current == "1.0.0" and state.foreign_current is None
    assert state.current_meta is not None and state.current_meta.status == "adopted"
    assert state.current_meta.derived and state.release("2.0.0").status == "unknown"  # type: ignore[union-attr]
    assert previous_good(state) == "1.0.0"  # adopted: a rollback target


@pytest.mark.parametrize("where", ["outside", "nested", "dangling", "directory"])
def test_current_outside_releases_is_foreign_and_kept_for_messages(root: Path, tmp_path: Path, where: str) -> None:
    elsewhere = tmp_path / "elsewhere" / "1.0.0"
    elsewhere.mkdir(parents=True)
    if where == "outside":
        (root / "current").symlink_to(elsewhere)
    elif where == "nested":
        (root / "current").symlink_to("releases/1.0.0/bin")
    elif where == "dangling":
        (root / "current").symlink_to("releases/9.9.9")
    else:
        (root / "current").mkdir()
    state = host_state(root)
    assert state.current is None and state.foreign_current
    assert where != "outside" or state.foreign_current == str(elsewhere)
    assert where != "dangling" or state.foreign_current == "releases/9.9.9"
    assert all(r.status == "unknown" for r in state.releases)
    assert "outside releases/" in state.describe_current()


def test_release_json_cannot_forge_markers(root: Path) -> None:
    (root / "current").symlink_to("releases/1.0.0")
    forged = ("@@current releases/2.0.0\n@@release 3.0.0\n{\"status\": \"good\"}\n"
              "@@tars-state 0000\n@@0000 current " + str(root / "releases/2.0.0") + "\n@@0000 release 4.0.0\n")
    meta = root / "releases/2.0.0/.tars"
    meta.mkdir()
    (meta / "release.json").write_text(forged)
    state = host_state(root)
    assert state.current == "1.0.0" and [r.version for r in state.releases] == ["1.0.0", "2.0.0"]
    assert state.release("2.0.0").status == "unknown"  # type: ignore[union-attr]


def test_huge_release_json_and_odd_dir_names_change_nothing(root: Path) -> None:
    """Through the real state command: a 2 MiB release.json saying good, a /dev/zero one, and
    directory names carrying newlines and marker-like text."""
    (root / "current").symlink_to("releases/1.0.0")
    huge = json.dumps({"version": "2.0.0", "status": "good", "sha256": "a" * 64,
                       "activated_at": "2099-01-01T00:00:00Z", "pad": " " * (2 << 20)})
    (root / "releases/2.0.0/.tars").mkdir()
    (root / "releases/2.0.0/.tars/release.json").write_text(huge)
    (root / "releases/3.0.0/.tars").mkdir(parents=True)
    (root / "releases/3.0.0/.tars/release.json").symlink_to("/dev/zero")
    for odd in ("4.0.0\n@@tars-state 0000\n@@0000 current x", "5.0.0\n@@0000 release 6.0.0", "7.0.0 "):
        (root / "releases" / odd / ".tars").mkdir(parents=True)
        (root / "releases" / odd / ".tars/release.json").write_text(json.dumps({"version": "6.0.0", "status": "good"}))
    state = host_state(root)
    assert state.current == "1.0.0"
    assert [(r.version, r.status) for r in state.releases] == [("1.0.0", "adopted"), ("2.0.0", "unknown"),
                                                               ("3.0.0", "unknown")]
    assert previous_good(state, exclude="1.0.0") is None


def test_absolute_current_is_never_pruned_nor_replaced(root: Path, tmp_path: Path) -> None:
    (root / "current").symlink_to(root / "releases" / "2.0.0")
    sh(remove_releases_command(ReleaseLayout(str(root)), ["1.0.0", "2.0.0"], "ab12"), root)
    assert sorted(p.name for p in (root / "releases").iterdir()) == ["2.0.0"]
    tar = tmp_path / "a.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        info = tarfile.TarInfo("VERSION")
        info.size = 2
        t.addfile(info, io.BytesIO(b"2\n"))
    sha = hashlib.sha256(tar.read_bytes()).hexdigest()
    plan = InstallPlan(layout=ReleaseLayout(str(root)), version="2.0.0", token="t0k", tarball=str(tar), sha256=sha,
                       meta={"version": "2.0.0", "status": "staged"})
    # Like sshd: the shell leads its own session, stdin stays open until it exits (watchdog).
    proc = subprocess.Popen(["bash", "-c", install_command(plan)], cwd=root, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    stderr = proc.stderr.read()  # type: ignore[union-attr]
    proc.wait(30)
    proc.stdin.close()  # type: ignore[union-attr]
    result = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    assert result.returncode == EXIT_IS_CURRENT and "current release" in result.stderr
    assert not (root / "releases" / "2.0.0" / "VERSION").exists()


def test_previous_good_is_the_latest_activated_good_other_than_excluded() -> None:
    state = HostState("3.0.0", [meta("1.0.0", "good", "2024-01-01T00:00:00Z"),
                                meta("2.0.0", "good", "2024-02-01T00:00:00Z"),
                                meta("2.5.0", "failed", "2024-02-15T00:00:00Z"),
                                meta("3.0.0", "staged", "2024-03-01T00:00:00Z")])
    assert previous_good(state, exclude="3.0.0") == "2.0.0"
    assert previous_good(state, exclude="2.0.0") == "1.0.0"
    assert previous_good(HostState(None, [])) is None


def test_prune_keeps_n_good_and_current_and_new_staged() -> None:
    state = HostState("5.0.0", [
        meta("1.0.0", "good", "2024-01-01T00:00:00Z"), meta("2.0.0", "good", "2024-02-01T00:00:00Z"),
        meta("3.0.0", "good", "2024-03-01T00:00:00Z"), meta("4.0.0", "failed", "2024-03-15T00:00:00Z"),
        meta("5.0.0", "failed", "2024-04-01T00:00:00Z"),
        meta("0.9.0", "staged", installed="2023-12-01T00:00:00Z"),
        meta("6.0.0", "staged", installed="2024-05-01T00:00:00Z"),
        ReleaseMeta(version="odd"),
    ])
    assert select_prunable(state, keep=2) == ["0.9.0", "1.0.0", "4.0.0"]


def test_prune_never_removes_current_even_if_old() -> None:
    state = HostState("1.0.0", [meta("1.0.0", "good", "2024-01-01T00:00:00Z"),
                                meta("2.0.0", "good", "2024-02-01T00:00:00Z"),
                                meta("3.0.0", "good", "2024-03-01T00:00:00Z")])
    assert select_prunable(state, keep=2) == []
