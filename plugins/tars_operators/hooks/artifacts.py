"""Artifact store: resolve a version's URL and sha256, fetch it once into the controller cache.

The cache is keyed by sha256 (``<cache>/<sha256>.tar.gz``); downloads go to a temporary file
in the same directory and are renamed into place only after the checksum matched, so
concurrent fetches of the same artifact are safe and a corrupt download never lands.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import unquote, urlparse

import httpx

from tars_operators.config.spec import AppSpec, Host
from tars_operators.config.spec import template_context
from tars_operators.config.templating import render
from tars_operators.errors import ArtifactUnavailable, ChecksumMismatch, InvalidValue, TarsError
from tars_operators.hooks.http import client as http_client
from tars_operators.redaction import mask_url, redact_url, scrub
from tars_operators.remote.validate import validate_version

CHUNK = 1 << 20
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class FetchedArtifact:
    """A resolved artifact: where it comes from, its verified sha256, the local copy if any."""

    version: str
    url: str
    sha256: str
    path: Path | None = None  # in the controller cache (push delivery); None for pull
    size: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """For XCom: the URL without its secrets (a pull-delivery host renders its own)."""
        return {"version": self.version, "url": redact_url(self.url), "sha256": self.sha256,
                "path": str(self.path) if self.path else None, "size": self.size,
                "seconds": self.seconds}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FetchedArtifact:
        path = data.get("path")
        return cls(version=data["version"], url=data["url"], sha256=data["sha256"],
                   path=Path(path) if path else None, size=data.get("size"),
                   seconds=float(data.get("seconds") or 0.0))


def default_cache_dir() -> Path:
    """``$TARS_ARTIFACT_CACHE_DIR``, else ``$TARS_CACHE_DIR/artifacts``, else
    ``$AIRFLOW_HOME/tars-cache``, else ``~/.cache/tars/artifacts``.

    Never shared with the YAML parse cache (``config.files.cache_dir``); ``TARS_CACHE_DIR=off``
    (which turns that one off) leaves artifacts in their default place: push needs a local copy.
    """
    own = os.environ.get("TARS_ARTIFACT_CACHE_DIR")
    if own:
        return Path(own)
    shared = os.environ.get("TARS_CACHE_DIR")
    if shared and shared not in ("off", "0"):
        return Path(shared) / "artifacts"
    if os.environ.get("AIRFLOW_HOME"):
        return Path(os.environ["AIRFLOW_HOME"]) / "tars-cache"
    return Path.home() / ".cache" / "tars" / "artifacts"


def artifact_url(spec: AppSpec, version: str, host: Host | None = None) -> str:
    """The artifact URL of ``version`` (rendered with the host's vars when a host is given)."""
    ctx = template_context(spec, host, validate_version(version, spec.config.artifact.version_pattern))
    return render(spec.config.artifact.url, ctx)


def resolve_latest(spec: AppSpec, *, timeout: float = 30.0) -> str:
    """The version named by the app's ``artifact.latest_url`` pointer file (first line)."""
    template = spec.config.artifact.latest_url
    if not template:
        raise InvalidValue(f"{spec.name}: artifact.latest_url is not configured, so 'latest' "
                           "cannot be resolved; give a version")
    url = render(template, template_context(spec, None, None))
    text = b"".join(_read_url(url, timeout)).decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise InvalidValue(f"{redact_url(url)}: the latest-version pointer is empty")
    try:
        return validate_version(lines[0], spec.config.artifact.version_pattern)
    except InvalidValue as exc:
        raise InvalidValue(f"{redact_url(url)}: {exc}") from exc


def parse_checksum_file(text: str, file_name: str) -> str:
    """sha256sum format (``<hex>  <name>``, several lines allowed) or a bare hex digest."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) == 1 and _HEX.match(lines[0].split()[0]) and len(lines[0].split()) == 1:
        return lines[0].lower()
    for line in lines:
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and _HEX.match(parts[0]) and parts[1].lstrip("*").strip() == file_name:
            return parts[0].lower()
    if len(lines) == 1 and _HEX.match(lines[0].split()[0]):
        return lines[0].split()[0].lower()
    raise InvalidValue(f"checksum file has no sha256 for {file_name!r}")


def expected_sha256(spec: AppSpec, version: str, url: str, *, timeout: float = 30.0) -> str:
    """From ``artifact.checksum.sha256[version]``, else the checksum-file URL template."""
    checksum = spec.config.artifact.checksum
    if version in checksum.sha256:
        return checksum.sha256[version]
    if not checksum.url:
        raise InvalidValue(f"no sha256 known for {spec.name} {version}: set artifact.checksum.sha256 "
                           "or artifact.checksum.url")
    sums_url = render(checksum.url, {**template_context(spec, None, version), "url": url})
    text = b"".join(_read_url(sums_url, timeout)).decode("utf-8", "replace")
    try:
        return parse_checksum_file(text, _file_name(url))
    except InvalidValue as exc:
        raise InvalidValue(f"{redact_url(sums_url)}: {exc}") from exc


def fetch_artifact(
    spec: AppSpec, version: str, *, cache_dir: Path | None = None, download: bool | None = None,
    host: Host | None = None, timeout: float = 300.0,
) -> FetchedArtifact:
    """Resolve and (for push delivery, or ``download=True``) fetch + verify into the cache."""
    started = time.monotonic()
    validate_version(version, spec.config.artifact.version_pattern)
    url = artifact_url(spec, version, host)
    sha = expected_sha256(spec, version, url, timeout=timeout)
    if download is None:
        download = spec.config.artifact.delivery == "push"
    if not download:
        return FetchedArtifact(version, url, sha, seconds=time.monotonic() - started)
    path = cached_or_download(url, sha, cache_dir or default_cache_dir(), timeout)
    return FetchedArtifact(version, url, sha, path, path.stat().st_size, time.monotonic() - started)


def on_this_worker(artifact: FetchedArtifact, spec: AppSpec, *, cache_dir: Path | None = None,
                   timeout: float = 300.0) -> FetchedArtifact:
    """The artifact's copy on the machine running this task. ``fetch`` may have run on another
    worker (CeleryExecutor): its path is then missing here (or another file), so the artifact
    is downloaded again into this worker's cache and verified against the sha256 ``fetch``
    resolved. Pull delivery (no local copy) is returned as it is."""
    if artifact.path is None:
        return artifact
    if artifact.path.is_file() and sha256_file(artifact.path) == artifact.sha256:
        return artifact
    # XCom carries the URL without its secrets: render it from the config again.
    path = cached_or_download(artifact_url(spec, artifact.version), artifact.sha256,
                              cache_dir or default_cache_dir(), timeout)
    return FetchedArtifact(artifact.version, artifact.url, artifact.sha256, path,
                           path.stat().st_size, artifact.seconds)


def cached_or_download(url: str, sha256: str, cache_dir: Path, timeout: float) -> Path:
    """``<cache>/<sha256>.tar.gz``, downloading (tmp + verify + rename) when missing or corrupt."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / f"{sha256}.tar.gz"
    if final.exists() and sha256_file(final) == sha256:
        return final
    fd, tmp_name = tempfile.mkstemp(prefix=f".{sha256[:12]}-", suffix=".part", dir=cache_dir)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in _read_url(url, timeout):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise ChecksumMismatch(f"{redact_url(url)}: sha256 is {digest.hexdigest()}, expected {sha256}; "
                                   "the artifact is corrupt or the checksum is wrong — nothing was sent to any host")
        os.replace(tmp_name, final)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return final


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_name(url: str) -> str:
    return unquote(urlparse(url).path.rsplit("/", 1)[-1])


def _read_url(url: str, timeout: float) -> Iterator[bytes]:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        try:
            with open(unquote(parsed.path), "rb") as handle:
                yield from iter(lambda: handle.read(CHUNK), b"")
        except OSError as exc:
            raise TarsError(f"cannot read {redact_url(url)}: {exc}") from exc
        return
    if parsed.scheme not in ("http", "https"):
        raise InvalidValue(f"artifact URL {redact_url(url)!r}: only file://, http:// and https:// are supported")
    shown = redact_url(url)  # a pre-signed URL's query is a credential
    mask_url(url)
    try:
        with http_client() as http, http.stream("GET", url, timeout=timeout,
                                                follow_redirects=True) as response:
            code = response.status_code
            if code >= 500 or code == 429:
                raise ArtifactUnavailable(f"GET {shown}: HTTP {code} (the artifact server is failing)")
            if code == 404:
                raise TarsError(f"GET {shown}: HTTP 404: not found (is this version published?)")
            if code != 200:
                raise TarsError(f"GET {shown}: HTTP {code}")
            yield from response.iter_bytes(CHUNK)
    except httpx.TransportError as exc:
        raise ArtifactUnavailable(f"GET {shown} failed: {type(exc).__name__}: {scrub(str(exc), url)}") from exc
    except httpx.HTTPError as exc:
        raise TarsError(f"GET {shown} failed: {type(exc).__name__}: {scrub(str(exc), url)}") from exc
