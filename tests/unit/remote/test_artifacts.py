from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType

import pytest

from tars_operators.config.schema import AppConfig
from tars_operators.config.spec import AppSpec
from tars_operators.errors import ChecksumMismatch, InvalidValue
from tars_operators.hooks.artifacts import fetch_artifact, parse_checksum_file

pytestmark = pytest.mark.unit
SHA = "ab" * 32


def spec_for(tmp_path: Path, checksum: dict[str, object]) -> AppSpec:
    raw = {"app": {"name": "demo", "owner": "t"},
           "artifact": {"url": "file://{{ vars.base }}/demo-{{ version }}.tar.gz", "checksum": checksum},
           "hosts": {}, "service": {"start": "true", "stop": "true"}}
    return AppSpec(AppConfig.model_validate(raw), (), tmp_path / "demo.yaml", MappingProxyType({"base": str(tmp_path)}))


def write_artifact(tmp_path: Path, data: bytes = b"release bytes") -> str:
    (tmp_path / "demo-1.0.0.tar.gz").write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("text", [f"{SHA}\n", f"{SHA}  demo-1.0.0.tar.gz\n", f"{'cd' * 32}  other.tgz\n{SHA} *demo-1.0.0.tar.gz\n"])
def test_checksum_file_formats(text: str) -> None:
    assert parse_checksum_file(text, "demo-1.0.0.tar.gz") == SHA


def test_checksum_file_without_our_file() -> None:
    with pytest.raises(InvalidValue):
        parse_checksum_file(f"{SHA}  a.tgz\n{SHA}  b.tgz\n", "demo-1.0.0.tar.gz")


def test_fetch_file_url_with_sidecar_into_cache(tmp_path: Path) -> None:
    sha = write_artifact(tmp_path)
    (tmp_path / "demo-1.0.0.tar.gz.sha256").write_text(f"{sha}  demo-1.0.0.tar.gz\n")
    spec = spec_for(tmp_path, {"url": "{{ url }}.sha256"})
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(8) as pool:  # concurrent fetches of the same artifact
        results = list(pool.map(lambda _: fetch_artifact(spec, "1.0.0", cache_dir=cache), range(8)))
    assert {r.path for r in results} == {cache / f"{sha}.tar.gz"}
    assert [p.name for p in cache.iterdir()] == [f"{sha}.tar.gz"]


def test_wrong_checksum_never_lands_in_cache(tmp_path: Path) -> None:
    write_artifact(tmp_path)
    spec = spec_for(tmp_path, {"sha256": {"1.0.0": SHA}})
    with pytest.raises(ChecksumMismatch, match="nothing was sent to any host"):
        fetch_artifact(spec, "1.0.0", cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_pull_delivery_resolves_without_downloading(tmp_path: Path) -> None:
    sha = write_artifact(tmp_path)
    art = fetch_artifact(spec_for(tmp_path, {"sha256": {"1.0.0": sha}}), "1.0.0", download=False)
    assert art.path is None and art.sha256 == sha and art.url.startswith("file://")


def test_hostile_version_is_refused_before_any_io(tmp_path: Path) -> None:
    with pytest.raises(InvalidValue):
        fetch_artifact(spec_for(tmp_path, {"sha256": {}}), "1.0;touch /tmp/pwned")
