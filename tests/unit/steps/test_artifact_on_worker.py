"""Nothing assumes one machine: a host task on another worker than ``fetch`` gets the artifact
into its own cache again, verified against the sha256 ``fetch`` resolved."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
import yaml

from tars_operators.config.loader import load_app
from tars_operators.errors import ChecksumMismatch
from tars_operators.hooks.artifacts import FetchedArtifact, fetch_artifact, on_this_worker

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]


def tarball(path: Path, body: bytes) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("app/version")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    path.write_bytes(buf.getvalue())
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    return digest


@pytest.fixture
def store(tmp_path: Path):
    """An artifact store (a directory behind file:// URLs) and a demo spec using it."""
    repo = tmp_path / "store"
    repo.mkdir()
    sha = tarball(repo / "demo-2.0.0.tar.gz", b"2.0.0\n")
    data = yaml.safe_load((REPO / "configs/apps/demo.yaml").read_text())
    data["traffic"]["min_in_service"] = 0
    data["hosts"] = {"list": [{"name": "h01", "address": "127.0.0.11",
                               "vars": {"deploy_root": "/srv/h1", "app_port": 8080}}],
                     "vars": {"artifact_base": f"file://{repo}", "haproxy_socket": "/x.sock"}}
    (tmp_path / "app.json.j2").write_text((REPO / "configs/templates/demo/app.json.j2").read_text())
    data["install"]["templates"][0]["src"] = "app.json.j2"
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(data))
    return load_app(tmp_path / "demo.yaml"), repo, sha


def test_another_workers_copy_is_fetched_again_and_verified(store, tmp_path: Path) -> None:
    spec, repo, sha = store
    fetched = fetch_artifact(spec, "2.0.0", cache_dir=tmp_path / "worker-1")
    assert fetched.path == tmp_path / "worker-1" / f"{sha}.tar.gz"
    # What a task on worker 2 reads from XCom: worker 1's path, the URL without secrets.
    from_xcom = FetchedArtifact.from_dict(fetched.as_dict())
    (tmp_path / "worker-1").rename(tmp_path / "gone")  # not on this machine
    here = on_this_worker(from_xcom, spec, cache_dir=tmp_path / "worker-2")
    assert here.path == tmp_path / "worker-2" / f"{sha}.tar.gz"
    assert hashlib.sha256(here.path.read_bytes()).hexdigest() == sha
    assert here.size == here.path.stat().st_size and here.sha256 == sha
    # the same machine: its own copy, untouched, nothing downloaded
    (repo / "demo-2.0.0.tar.gz").unlink()
    assert on_this_worker(here, spec, cache_dir=tmp_path / "worker-2").path == here.path


def test_a_corrupt_local_copy_is_replaced(store, tmp_path: Path) -> None:
    spec, _, sha = store
    fetched = fetch_artifact(spec, "2.0.0", cache_dir=tmp_path / "w")
    fetched.path.write_bytes(b"truncated")
    again = on_this_worker(fetched, spec, cache_dir=tmp_path / "w")
    assert hashlib.sha256(again.path.read_bytes()).hexdigest() == sha


def test_an_artifact_changed_since_fetch_is_refused(store, tmp_path: Path) -> None:
    spec, repo, sha = store
    fetched = fetch_artifact(spec, "2.0.0", cache_dir=tmp_path / "w1")
    tarball(repo / "demo-2.0.0.tar.gz", b"something else\n")  # replaced on the server
    fetched.path.unlink()  # and this task runs on another worker
    with pytest.raises(ChecksumMismatch) as exc:
        on_this_worker(FetchedArtifact.from_dict(fetched.as_dict()), spec,
                       cache_dir=tmp_path / "w2")
    assert f"expected {sha}" in str(exc.value) and "nothing was sent to any host" in str(exc.value)
    assert not list((tmp_path / "w2").glob("*.tar.gz"))  # no corrupt copy lands


def test_pull_delivery_has_no_local_copy_to_move(store) -> None:
    spec, _, sha = store
    pulled = FetchedArtifact("2.0.0", "http://x/demo-2.0.0.tar.gz", sha)
    assert on_this_worker(pulled, spec) is pulled
