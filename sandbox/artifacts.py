"""Demo release tarballs (deterministic builds) and the local artifact HTTP server."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sandbox.procs import Tracked

GOOD_VERSIONS = ("1.0.0", "1.1.0", "2.0.0", "2.1.0")
BAD_VERSIONS = {"2.0.0-broken": "broken", "2.0.0-slow": "slow",
                # Pass /health but serve users badly (canary analysis sees them, health cannot):
                "2.0.0-errors": "errors", "2.0.0-latency": "latency"}
# How a build behaves, in its tarball's BUILD file (the app, or a sandbox serving every host
# from one process, reads it): 5% of requests to / answer 500; 200 ms added to each.
BUILD_SETTINGS = {"error_percent": 5, "latency_ms": 200}
LATEST_GOOD = "2.1.0"
BASELINE_VERSION = "1.0.0"
# Fixed mtime so the same sources always give the same bytes and the same sha256.
_MTIME = 1_700_000_000


@dataclass(frozen=True)
class Artifact:
    """One built release tarball."""

    version: str
    path: Path
    sha256: str


def tarball_name(version: str) -> str:
    """File name of the release tarball for version."""
    return f"demo-{version}.tar.gz"


def _demo_source(name: str) -> bytes:
    return resources.files("sandbox.demo_app").joinpath(name).read_bytes()


def build_tarball(version: str, build: str) -> bytes:
    """Bytes of demo-<version>.tar.gz: app.py, BUILD, VERSION, bin/demo-ctl at the archive root."""
    app = _demo_source("app.py").replace(b'"@BUILD@"', f'"{build}"'.encode())
    behaviour = json.dumps({"build": build, **BUILD_SETTINGS}, sort_keys=True)
    members = [
        ("BUILD", f"{behaviour}\n".encode(), 0o644),
        ("VERSION", f"{version}\n".encode(), 0o644),
        ("app.py", app, 0o644),
        ("bin", None, 0o755),
        ("bin/demo-ctl", _demo_source("demo-ctl"), 0o755),
    ]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in sorted(members, key=lambda m: m[0]):
            info = tarfile.TarInfo(name)
            info.mode, info.mtime, info.uid, info.gid = mode, _MTIME, 0, 0
            info.uname = info.gname = ""
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def build_all(artifacts_dir: Path) -> dict[str, Artifact]:
    """Build (or refresh) every demo version in artifacts_dir with sidecars and SHA256SUMS."""
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    builds = {v: "normal" for v in GOOD_VERSIONS} | BAD_VERSIONS
    built: dict[str, Artifact] = {}
    for version, build in builds.items():
        data = build_tarball(version, build)
        digest = hashlib.sha256(data).hexdigest()
        path = artifacts_dir / tarball_name(version)
        if not path.exists() or path.read_bytes() != data:
            _write(path, data)
        _write(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n".encode())
        built[version] = Artifact(version, path, digest)
    sums = "".join(f"{a.sha256}  {a.path.name}\n" for a in sorted(built.values(), key=lambda a: a.path.name))
    _write(artifacts_dir / "SHA256SUMS", sums.encode())
    _write(artifacts_dir / "demo-latest.txt", f"{LATEST_GOOD}\n".encode())
    return built


def _write(path: Path, data: bytes) -> None:
    # Write then rename: the artifact server may be serving the old file right now.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def extract(tarball: Path, dest: Path) -> None:
    """Unpack a release tarball into dest (with the stdlib's safety filter where it exists)."""
    with tarfile.open(tarball) as tar:
        if hasattr(tarfile, "tar_filter"):  # Python >= 3.11.4
            tar.extractall(dest, filter="tar")
        else:
            tar.extractall(dest)  # noqa: S202 — our own tarballs, built just above


def server_process(pid_file: Path) -> Tracked:
    """The tracked artifact server process."""
    return Tracked("artifact server", pid_file, "http.server")


def start_server(artifacts_dir: Path, port: int, pid_file: Path, log_file: Path) -> int:
    """Start `python -m http.server` on 127.0.0.1:port serving artifacts_dir; returns its pid."""
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
             "--directory", str(artifacts_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid
