"""sshd for the sandbox hosts: keys, known_hosts, and sharded sshd processes (16 addresses each)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from sandbox.errors import SandboxError
from sandbox.layout import Host, Layout
from sandbox.procs import Tracked, listening_sockets, wait_until

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
    from tars_operators.hooks.ssh import known_hosts_name

    name = known_hosts_name(host.address, host.ssh_port)
    keytype, key = host_pub.split()[:2]
    return f"{name} {keytype} {key}\n"


def write_known_hosts(layout: Layout, hosts: Sequence[Host]) -> None:
    """known_hosts holding the sandbox host key for every host address, so checking stays on:
    one line per host, as ssh-keyscan writes it for a real fleet (Tars parses the file once per
    process, whatever its size: ``hooks/ssh.known_keys``)."""
    host_pub = Path(f"{layout.host_key}.pub").read_text()
    layout.known_hosts.write_text("".join(known_hosts_line(h, host_pub) for h in hosts))


def trust(client: Any, known_hosts: Path, host: Host) -> None:
    """Give a paramiko client the keys ``known_hosts`` holds for ``host`` (the file parsed once
    per process, as Tars does; ``client.load_host_keys`` parses it whole for every client)."""
    from tars_operators.hooks.ssh import known_hosts_name, known_keys

    name = known_hosts_name(host.address, host.ssh_port)
    for keytype, key in known_keys(known_hosts, name).items():
        client.get_host_keys().add(name, keytype, key)


def shards(hosts: Sequence[Host]) -> list[list[Host]]:
    """Hosts split into groups of at most MAX_ADDRESSES_PER_SSHD, one sshd each."""
    return [list(hosts[i:i + MAX_ADDRESSES_PER_SSHD]) for i in range(0, len(hosts), MAX_ADDRESSES_PER_SSHD)]


def render_config(layout: Layout, hosts: Sequence[Host], shard: int, user: str,
                  blocked: Collection[str] = ()) -> str:
    """sshd_config for one shard: key-only logins for user, per-host HOME via Match.

    Hosts named in ``blocked`` get no ListenAddress: their SSH port refuses connections.
    """
    listen = [h for h in hosts if h.name not in blocked]
    if not listen:
        # Without any ListenAddress sshd would listen on every address, port 22.
        raise SandboxError(f"sshd shard {shard}: cannot block every host of the shard "
                           f"({', '.join(h.name for h in hosts)})")
    lines = [
        "# written by `python -m sandbox up`; sandbox only (StrictModes off, loopback only)",
        *(f"ListenAddress {h.address}:{h.ssh_port}" for h in listen),
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


def check_config(config: Path) -> None:
    """Raise if `sshd -t` rejects config."""
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        raise SandboxError(f"sshd rejects {config}: {check.stderr.strip()}")


def process(layout: Layout, shard: int) -> Tracked:
    """The tracked sshd listener of one shard."""
    return Tracked(f"sshd shard {shard}", layout.sshd_pid(shard), str(layout.sshd_config(shard)))


def start(layout: Layout, hosts: Sequence[Host], user: str) -> list[int]:
    """Write configs and start one `sshd -D` per shard; returns their pids (not yet listening)."""
    if os.geteuid() == 0:
        # sshd as root refuses to start (even -t) without its privilege-separation dir.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    layout.ssh_blocked.unlink(missing_ok=True)  # fresh listeners listen on every host
    groups = shards(hosts)
    for shard, group in enumerate(groups):
        layout.sshd_config(shard).write_text(render_config(layout, group, shard, user))
        for h in group:
            h.home.mkdir(parents=True, exist_ok=True)
    # A big fleet has over a hundred shards: check their configs a few at a time.
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda shard: check_config(layout.sshd_config(shard)), range(len(groups))))
    pids = []
    for shard in range(len(groups)):
        config = layout.sshd_config(shard)
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


# -- making hosts unreachable over SSH ----------------------------------------------------------
# A blocked host's address is left out of its shard's ListenAddress lines and the shard is sent
# SIGHUP: sshd re-execs itself with the new config (same pid), so connections to that address
# are refused (like a host whose sshd is down) while the app keeps serving and HAProxy keeps it
# UP. Sessions already open stay open. During the re-exec (a few ms) the shard's other
# addresses refuse too; Tars's SSH hook retries refused connects, so releases ride through it.
# (`Match LocalAddress` + `DenyUsers` would need the same reload and fail authentication
# instead, which is a different failure than an unreachable host.)


def blocked_hosts(layout: Layout) -> set[str]:
    """Names of the hosts whose SSH is blocked now."""
    try:
        return set(json.loads(layout.ssh_blocked.read_text()))
    except (OSError, ValueError):
        return set()


def set_blocked(layout: Layout, hosts: Sequence[Host], user: str, blocked: Collection[str],
                timeout: float = 10.0) -> None:
    """Make exactly ``blocked`` unreachable over SSH: rewrite changed shards, SIGHUP, verify."""
    before = blocked_hosts(layout)
    wanted = set(blocked)
    unknown = wanted - {h.name for h in hosts}
    if unknown:
        raise SandboxError(f"cannot block unknown host(s): {', '.join(sorted(unknown))}")
    changed = before ^ wanted
    reloaded: list[tuple[int, int]] = []
    for shard, group in enumerate(shards(hosts)):
        if not changed & {h.name for h in group}:
            continue
        pid = process(layout, shard).pid()
        if pid is None:
            raise SandboxError(f"sshd shard {shard} is not running; is the sandbox up?")
        config = layout.sshd_config(shard)
        text = render_config(layout, group, shard, user, wanted)
        new = config.with_suffix(".new")
        new.write_text(text)
        check = subprocess.run([SSHD, "-t", "-f", str(new)], capture_output=True, text=True)
        if check.returncode != 0:
            new.unlink(missing_ok=True)
            raise SandboxError(f"sshd rejects the new config of shard {shard}: {check.stderr.strip()}")
        new.replace(config)
        # SIGHUP before sshd has installed its handler (just started or re-exec'ing) kills it.
        wait_until(partial(_catches_sighup, pid), timeout, f"sshd shard {shard} to handle SIGHUP")
        os.kill(pid, signal.SIGHUP)
        reloaded.append((shard, pid))
    if wanted:
        layout.ssh_blocked.write_text(json.dumps(sorted(wanted)) + "\n")
    else:
        layout.ssh_blocked.unlink(missing_ok=True)
    wait_until(partial(_listening_is, hosts, wanted), timeout,
               f"ssh of {', '.join(sorted(wanted)) or 'no host'} to refuse connections "
               f"and of every other host to accept them")
    for shard, pid in reloaded:  # back in its accept loop, ready for the next change
        wait_until(partial(_catches_sighup, pid), timeout, f"sshd shard {shard} to restart")


def _listening_is(hosts: Sequence[Host], blocked: Collection[str]) -> bool:
    # One look at the kernel's listener table: probing by connecting would fork an sshd child.
    listening = listening_sockets()
    return all(((h.address, h.ssh_port) in listening) == (h.name not in blocked) for h in hosts)


def wait_listening(hosts: Sequence[Host], timeout: float, logs: Path) -> None:
    """Wait until every host's sshd listens (from the listener table, without connecting)."""
    def missing() -> list[Host]:
        listening = listening_sockets()
        return [h for h in hosts if (h.address, h.ssh_port) not in listening]

    try:
        wait_until(lambda: not missing(), timeout, "sshd")
    except SandboxError:
        late = missing()
        raise SandboxError(f"timed out after {timeout:.0f}s waiting for sshd of {len(late)} host(s): "
                           f"{', '.join(f'{h.name} on {h.address}:{h.ssh_port}' for h in late[:5])} "
                           f"(see {logs})") from None


def _catches_sighup(pid: int) -> bool:
    """True once the process has a SIGHUP handler (``SigCgt`` in /proc/<pid>/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        raise SandboxError(f"sshd (pid {pid}) is gone; run `python -m sandbox up`") from None
    caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) & (1 << (signal.SIGHUP - 1)))
