"""sshd for the sandbox hosts: keys, known_hosts, and sharded sshd processes (16 addresses each)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from sandbox.errors import SandboxError
from sandbox.layout import Host, Layout
from sandbox.procs import Tracked

SSHD = "/usr/sbin/sshd"
# sshd aborts on a 17th listen socket ("Too many listen sockets. Enlarge MAX_LISTEN_SOCKS").
MAX_ADDRESSES_PER_SSHD = 16


def ensure_keys(layout: Layout) -> None:
    """Generate the sandbox host key and client key once; authorize the client key."""
    for key, comment in ((layout.host_key, "tars-sandbox-host"), (layout.client_key, "tars-sandbox-client")):
        if not key.exists():
            result = subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                capture_output=True, text=True,
            )
            if result.returncode != 0:
                raise SandboxError(f"ssh-keygen failed for {key}: {result.stderr.strip()}")
    pub = Path(f"{layout.client_key}.pub").read_text()
    layout.authorized_keys.write_text(pub)
    os.chmod(layout.authorized_keys, 0o600)


def known_hosts_line(host: Host, host_pub: str) -> str:
    """known_hosts entry of host: `[addr]:port keytype key` (plain addr on port 22)."""
    name = host.address if host.ssh_port == 22 else f"[{host.address}]:{host.ssh_port}"
    keytype, key = host_pub.split()[:2]
    return f"{name} {keytype} {key}\n"


def write_known_hosts(layout: Layout, hosts: Sequence[Host]) -> None:
    """known_hosts holding the sandbox host key for every host address, so checking stays on."""
    host_pub = Path(f"{layout.host_key}.pub").read_text()
    layout.known_hosts.write_text("".join(known_hosts_line(h, host_pub) for h in hosts))


def shards(hosts: Sequence[Host]) -> list[list[Host]]:
    """Hosts split into groups of at most MAX_ADDRESSES_PER_SSHD, one sshd each."""
    return [list(hosts[i:i + MAX_ADDRESSES_PER_SSHD]) for i in range(0, len(hosts), MAX_ADDRESSES_PER_SSHD)]


def render_config(layout: Layout, hosts: Sequence[Host], shard: int, user: str) -> str:
    """sshd_config for one shard: key-only logins for user, per-host HOME via Match."""
    lines = [
        "# written by `python -m sandbox up`; sandbox only (StrictModes off, loopback only)",
        *(f"ListenAddress {h.address}:{h.ssh_port}" for h in hosts),
        f"HostKey {layout.host_key}",
        f"PidFile {layout.sshd_pid(shard)}",
        f"AuthorizedKeysFile {layout.authorized_keys}",
        f"AllowUsers {user}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "MaxStartups 200:30:400",
        "MaxSessions 100",
        "LoginGraceTime 30",
        "LogLevel ERROR",
        "Subsystem sftp internal-sftp",
    ]
    # Own HOME per host: the login shell then skips the real user's ~/.bashrc (pyenv init
    # there costs ~120 ms per command) and each host gets a home of its own.
    for h in hosts:
        lines += [f"Match LocalAddress {h.address}", f"    SetEnv HOME={h.home}"]
    return "\n".join(lines) + "\n"


def process(layout: Layout, shard: int) -> Tracked:
    """The tracked sshd listener of one shard."""
    return Tracked(f"sshd shard {shard}", layout.sshd_pid(shard), str(layout.sshd_config(shard)))


def start(layout: Layout, hosts: Sequence[Host], user: str) -> list[int]:
    """Write configs and start one `sshd -D` per shard; returns their pids (not yet listening)."""
    if os.geteuid() == 0:
        # sshd as root refuses to start (even -t) without its privilege-separation dir.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    pids = []
    for shard, group in enumerate(shards(hosts)):
        config = layout.sshd_config(shard)
        config.write_text(render_config(layout, group, shard, user))
        for h in group:
            h.home.mkdir(parents=True, exist_ok=True)
        check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise SandboxError(f"sshd rejects {config}: {check.stderr.strip()}")
        proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(config), "-E", str(layout.logs / f"sshd-{shard}.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # sshd writes PidFile itself once listening; write it now too so a crash in between
        # still leaves a record for `down`.
        layout.sshd_pid(shard).write_text(f"{proc.pid}\n")
        pids.append(proc.pid)
    return pids
