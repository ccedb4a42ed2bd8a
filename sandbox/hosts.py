"""The on-host release layout Tars operates on, installed and reset directly on disk.

deploy_root/releases/<version>/           unpacked tarball + config/app.json
deploy_root/releases/<version>/.tars/release.json
deploy_root/current -> releases/<version>  (relative symlink)
deploy_root/shared/demo.pid, demo.log
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from sandbox.appmux import CONTROL_ADDRESS
from sandbox.artifacts import Artifact, extract
from sandbox.errors import SandboxError
from sandbox.layout import Host
from sandbox.procs import Tracked, terminate

BOOTSTRAP_RUN_ID = "sandbox-bootstrap"


def app_process(host: Host) -> Tracked:
    """The tracked demo app process of host."""
    return Tracked(f"{host.name} app", host.deploy_root / "shared" / "demo.pid", "app.py")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def render_app_config(host: Host) -> str:
    """config/app.json for host (what Tars renders from its jinja template in real releases)."""
    return json.dumps({"address": host.address, "port": host.app_port, "host": host.name}) + "\n"


def install_baseline(host: Host, artifact: Artifact, mux_port: int | None = None) -> None:
    """Wipe host's deploy root to the baseline: only artifact's release, current pointing at it.

    With mux_port (scale mode) the host's demo-ctl asks the app multiplexer on that port;
    without, shared/mux is removed so demo-ctl runs app.py itself.
    """
    root = host.deploy_root
    releases = root / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    (root / "shared").mkdir(exist_ok=True)
    # Everything else (other releases, half-copied temp dirs, stray files) goes.
    for entry in list(releases.iterdir()) + [e for e in root.iterdir() if e.name not in ("releases", "shared")]:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    release = releases / artifact.version
    extract(artifact.path, release)
    (release / "config").mkdir()
    (release / "config" / "app.json").write_text(render_app_config(host))
    now = _now()
    meta = {"version": artifact.version, "sha256": artifact.sha256, "installed_at": now,
            "activated_at": now, "run_id": BOOTSTRAP_RUN_ID, "status": "good"}
    (release / ".tars").mkdir()
    (release / ".tars" / "release.json").write_text(json.dumps(meta, indent=2) + "\n")
    (root / "current").symlink_to(Path("releases") / artifact.version)
    mux = root / "shared" / "mux"
    if mux_port is None:
        mux.unlink(missing_ok=True)
    else:
        mux.write_text(f"{CONTROL_ADDRESS} {mux_port}\n")
    for entry in list(host.home.iterdir()) if host.home.exists() else []:
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    host.home.mkdir(parents=True, exist_ok=True)


def ctl(host: Host, action: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run <deploy_root>/current/bin/demo-ctl action locally (what Tars runs over SSH)."""
    script = host.deploy_root / "current" / "bin" / "demo-ctl"
    if not script.exists():
        raise SandboxError(f"{host.name}: {script} missing; run `python -m sandbox reset`")
    return subprocess.run(["/bin/bash", str(script), action], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def stop_app(host: Host) -> None:
    """Stop host's app whatever release it runs (the pid file is per deploy root)."""
    if (host.deploy_root / "current" / "bin" / "demo-ctl").exists():
        result = ctl(host, "stop")
        if result.returncode != 0:
            raise SandboxError(f"{host.name}: demo-ctl stop exited {result.returncode}: {result.stderr.strip()}")
    proc = app_process(host)
    pid = proc.pid()
    if pid is not None:  # e.g. current was repointed at a release without demo-ctl
        terminate([pid])


def start_app(host: Host) -> subprocess.Popen[bytes]:
    """Start host's app via demo-ctl without waiting for it (callers wait for /health)."""
    script = host.deploy_root / "current" / "bin" / "demo-ctl"
    # Through bash, not exec of the script: another thread may be writing some other file
    # while this forks, and exec would then fail with ETXTBSY.
    return subprocess.Popen(["/bin/bash", str(script), "start"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
