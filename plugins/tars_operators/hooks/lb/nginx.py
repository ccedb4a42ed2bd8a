"""nginx: mark the server `down` in an upstream block of a file on the LB host, `nginx -t`, reload.

Open-source nginx has no API for this, so the upstream file is rewritten over SSH. Several
workers may pull hosts out at once, so the write is a compare-and-swap under `flock`: the file
is written only if its sha256 is still the one that was read (else read again and retry), and
restored if `nginx -t`, the reload, or nginx itself (no new workers) rejects it
(`nginx_scripts.py`). nginx reports no sessions or health: after a drain's reload the old
workers finish the requests in flight and exit, so a drain waits for them (up to
`drain_timeout`), or `nginx.drain_seconds`, or — when the master cannot be seen — the whole
`drain_timeout`. The admin state is read from the file, which never says what nginx does not do.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from dataclasses import dataclass

from tars_operators.config.schema import Nginx
from tars_operators.config.spec import AppSpec, Host, template_context
from tars_operators.config.templating import render
from tars_operators.errors import LoadBalancerError, LoadBalancerUnreachable
from tars_operators.hooks.lb.base import LoadBalancer, ServerState, render_for_host
from tars_operators.hooks.lb.nginx_scripts import (
    EXIT_CHANGED,
    EXIT_NOT_RENEWED,
    EXIT_RELOAD_FAILED,
    SHA_MARK,
    alive_command,
    parse_old_workers,
    read_command,
    write_command,
)
from tars_operators.hooks.lb.remote import CommandOutput, SSHRunner, resolve_host
from tars_operators.hooks.lb.runtime_api import Runner

log = logging.getLogger(__name__)
_SERVER = re.compile(r"(?m)^(?P<head>[ \t]*server[ \t]+)(?P<addr>[^\s;#]+)(?P<params>[^;#\n]*);")


@dataclass(frozen=True)
class UpstreamServer:
    address: str
    down: bool


def _block(text: str, upstream: str) -> tuple[int, int]:
    """(start, end) of the body of `upstream <name> { … }` in text."""
    match = re.search(rf"(?m)^[ \t]*upstream[ \t]+{re.escape(upstream)}[ \t]*\{{", text)
    if match is None:
        names = re.findall(r"(?m)^[ \t]*upstream[ \t]+([^\s{]+)", text)
        raise LoadBalancerError(
            f"no upstream {upstream!r} in the nginx file; upstreams: {', '.join(names) or '(none)'}"
        )
    end = text.find("}", match.end())
    if end < 0:
        raise LoadBalancerError(f"upstream {upstream!r} has no closing '}}' in the nginx file")
    return match.end(), end


def upstream_servers(text: str, upstream: str) -> list[UpstreamServer]:
    """The servers of one upstream block and whether each is marked `down`."""
    start, end = _block(text, upstream)
    return [UpstreamServer(m["addr"], "down" in m["params"].split())
            for m in _SERVER.finditer(text, start, end)]


def set_down(text: str, upstream: str, server: str, down: bool) -> str:
    """text with `down` added to (or removed from) server's line in the upstream block."""
    start, end = _block(text, upstream)
    found = False

    def edit(m: re.Match[str]) -> str:
        nonlocal found
        if m["addr"] != server:
            return m[0]
        found = True
        params = [p for p in m["params"].split() if p != "down"] + (["down"] if down else [])
        return f"{m['head']}{m['addr']}{''.join(' ' + p for p in params)};"

    body = _SERVER.sub(edit, text[start:end])
    if not found:
        names = ", ".join(s.address for s in upstream_servers(text, upstream)) or "(none)"
        raise LoadBalancerError(
            f"no server {server!r} in nginx upstream {upstream!r}; it has: {names} "
            f"(traffic.nginx.server renders to {server!r})"
        )
    return text[:start] + body + text[end:]


class NginxBalancer(LoadBalancer):
    """An nginx upstream block in a file on ``lb_host``, edited over SSH."""

    provider = "nginx"
    attempts = 10
    renew_timeout = 10.0  # seconds for the master to start new workers after a reload

    def __init__(self, spec: AppSpec, runner: Runner | None = None) -> None:
        super().__init__(spec)
        conf = spec.config.traffic.nginx
        if conf is None:
            raise LoadBalancerError("traffic.provider is nginx but traffic.nginx is not set")
        self.conf: Nginx = conf
        ctx = template_context(spec, None, None)
        self.lb_host = resolve_host(spec, render(conf.lb_host, ctx))
        self.path = render(conf.upstream_file, ctx)
        self.upstream = render(conf.upstream, ctx)
        self.reload = render(conf.reload, ctx)
        self.pid_file = render(conf.pid_file, ctx)
        self.runner: Runner = runner or SSHRunner(spec, self.lb_host, "nginx upstream")
        # host name → pids of the workers its drain's reload replaced; None: master not visible
        self._old_workers: dict[str, tuple[int, ...] | None] = {}

    def server_name(self, host: Host) -> str:
        return render_for_host(self.spec, host, self.conf.server, "traffic.nginx.server")

    def where(self) -> str:
        return f"nginx upstream {self.upstream!r} in {self.path} on {self.lb_host.name}"

    def close(self) -> None:
        if isinstance(self.runner, SSHRunner):
            self.runner.close()

    def _run(self, command: str, what: str, host: Host | None = None) -> CommandOutput:
        out = self.runner(command, 60.0 + self.renew_timeout)
        if out.exit_code is None:
            raise LoadBalancerUnreachable(f"{what} timed out on {self.where()}")
        if out.exit_code not in (0, EXIT_CHANGED):
            tail = "\n".join(out.stderr.strip().splitlines()[-10:])
            who = f"{host.name}: " if host is not None else ""
            if out.exit_code in (EXIT_RELOAD_FAILED, EXIT_NOT_RENEWED):
                raise LoadBalancerError(f"{who}nginx reload not applied on {self.lb_host.name} "
                                        f"({self.reload!r}, exit {out.exit_code}): {tail}")
            raise LoadBalancerError(f"{who}{what} failed on {self.where()} (exit {out.exit_code}): {tail}")
        return out

    def _read(self) -> tuple[str, str]:
        out = self._run(read_command(self.path), "reading the upstream file")
        first, _, text = out.stdout.partition("\n")
        if not first.startswith(SHA_MARK):
            raise LoadBalancerError(f"unexpected answer reading {self.path}: {first[:200]!r}")
        return first[len(SHA_MARK):].strip(), text

    def _mark(self, host: Host, down: bool) -> tuple[int, ...] | None:
        """Rewrite and reload (verified); the replaced workers' pids (None: cannot tell)."""
        server = self.server_name(host)
        for _ in range(self.attempts):
            sha, text = self._read()
            new = set_down(text, self.upstream, server, down)
            if new == text:  # a retry after a lost answer, or a race: which workers to wait for?
                return None
            command = write_command(self.path, sha, new, self.reload, pid_file=self.pid_file,
                                    renew_timeout=self.renew_timeout)
            out = self._run(command, "rewriting + reload", host)
            if out.exit_code == 0:
                return parse_old_workers(out.stdout)
            time.sleep(0.05)  # EXIT_CHANGED: another worker wrote first; read again
        raise LoadBalancerError(f"{self.where()} kept changing; gave up after {self.attempts} tries")

    def _drain(self, host: Host) -> None:
        self._old_workers[host.name] = self._mark(host, True)

    def _disable(self, host: Host) -> None:
        self._mark(host, True)

    def _enable(self, host: Host) -> None:
        self._old_workers.pop(host.name, None)
        self._mark(host, False)

    def wait_drained(self, host: Host, timeout: float) -> tuple[ServerState, bool]:
        """Down in the file, then the old workers gone (or drain_seconds / drain_timeout waited)."""
        state = self.state(host)
        if state.admin != "maint":
            return state, False
        old = self._old_workers.pop(host.name, None)
        fixed = self.conf.drain_seconds
        if fixed is None and old is None:
            log.warning("%s: cannot see nginx's workers (%s on %s): cannot verify the drain; "
                        "waiting traffic.drain_timeout (%gs)", host.name, self.pid_file,
                        self.lb_host.name, timeout)
            fixed = timeout
        if fixed is not None:
            time.sleep(fixed)
            return state, True
        left = self._wait_workers_gone(old or (), timeout)
        return dataclasses.replace(state, sessions=None if left else 0), not left

    def _wait_workers_gone(self, pids: tuple[int, ...], timeout: float) -> tuple[int, ...]:
        """Poll until none of pids is an nginx process; the ones left at timeout."""
        deadline = time.monotonic() + timeout
        while pids:
            out = self.call("watch the old nginx workers", None,
                            lambda: self._run(alive_command(pids), "watching old workers"))
            pids = tuple(int(p) for p in out.stdout.split() if p.isdigit())
            if not pids or time.monotonic() >= deadline:
                break
            time.sleep(self.poll_interval)
        return pids

    def _states(self, hosts: list[Host]) -> dict[str, ServerState]:
        _, text = self._read()
        servers = {s.address: s for s in upstream_servers(text, self.upstream)}
        out = {}
        for host in hosts:
            name = self.server_name(host)
            if name not in servers:
                set_down(text, self.upstream, name, True)  # raises the listing message
            down = servers[name].down
            out[host.name] = ServerState(name, "MAINT" if down else "UP",
                                         "maint" if down else "ready", None)
        return out

    def _state(self, host: Host) -> ServerState:
        return self._states([host])[host.name]
