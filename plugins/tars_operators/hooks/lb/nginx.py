"""nginx: mark the server `down` in an upstream block of a file on the LB host, `nginx -t`, reload.

Open-source nginx has no API for this, so the upstream file is rewritten over SSH. Several
workers may pull hosts out at once, so the write is a compare-and-swap under `flock`: the file
is written only if its sha256 is still the one that was read (else read again and retry), and
restored from a backup if `nginx -t` rejects it. nginx reports neither sessions nor health:
a graceful reload lets old workers finish requests in flight, and state is read from the file.
"""

from __future__ import annotations

import base64
import re
import shlex
import time
from collections.abc import Iterable
from dataclasses import dataclass

from tars_operators.config.schema import Nginx
from tars_operators.config.spec import AppSpec, Host, template_context
from tars_operators.config.templating import render
from tars_operators.errors import LoadBalancerError
from tars_operators.hooks.lb.base import LoadBalancer, ServerState, render_for_host
from tars_operators.hooks.lb.remote import CommandOutput, SSHRunner, resolve_host
from tars_operators.hooks.lb.runtime_api import Runner

q = shlex.quote
EXIT_CHANGED, EXIT_INVALID = 75, 65
SHA_MARK = "@@sha256 "
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


def read_command(path: str) -> str:
    """Print the file's sha256 on a marked first line, then the file."""
    return f"printf '{SHA_MARK}%s\\n' \"$(sha256sum < {q(path)} | cut -c1-64)\" && cat {q(path)}"


def write_command(path: str, expected_sha: str, new_text: str, reload: str) -> str:
    """Swap in new_text if the file still has expected_sha; `nginx -t` or restore; reload."""
    data = base64.b64encode(new_text.encode()).decode()
    f, new, bak = q(path), q(path + ".tars-new"), q(path + ".tars-bak")
    return "\n".join([
        "set -e",
        f"exec 9>>{q(path + '.tars-lock')}",
        "flock -w 60 9",
        f'[ "$(sha256sum < {f} | cut -c1-64)" = {q(expected_sha)} ] || '
        f"{{ echo 'upstream file changed since read' >&2; exit {EXIT_CHANGED}; }}",
        f"printf %s {q(data)} | base64 -d > {new}",
        f"chmod --reference={f} {new} 2>/dev/null || true",
        f"cp -p {f} {bak}",
        f"mv -f {new} {f}",
        f"if ! out=$(nginx -t 2>&1); then mv -f {bak} {f}; echo \"$out\" >&2; exit {EXIT_INVALID}; fi",
        f"sh -ec {q(reload)}",
    ])


class NginxBalancer(LoadBalancer):
    """An nginx upstream block in a file on ``lb_host``, edited over SSH."""

    provider = "nginx"
    attempts = 10

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
        self.runner: Runner = runner or SSHRunner(spec, self.lb_host, "nginx upstream")

    def server_name(self, host: Host) -> str:
        return render_for_host(self.spec, host, self.conf.server, "traffic.nginx.server")

    def where(self) -> str:
        return f"nginx upstream {self.upstream!r} in {self.path} on {self.lb_host.name}"

    def close(self) -> None:
        if isinstance(self.runner, SSHRunner):
            self.runner.close()

    def _run(self, command: str, what: str) -> CommandOutput:
        out = self.runner(command, 60.0)
        if out.exit_code not in (0, EXIT_CHANGED):
            tail = "\n".join(out.stderr.strip().splitlines()[-10:])
            raise LoadBalancerError(f"{what} failed on {self.where()} (exit {out.exit_code}): {tail}")
        return out

    def _read(self) -> tuple[str, str]:
        out = self._run(read_command(self.path), "reading the upstream file")
        first, _, text = out.stdout.partition("\n")
        if not first.startswith(SHA_MARK):
            raise LoadBalancerError(f"unexpected answer reading {self.path}: {first[:200]!r}")
        return first[len(SHA_MARK):].strip(), text

    def _mark(self, host: Host, down: bool) -> None:
        server = self.server_name(host)
        for _ in range(self.attempts):
            sha, text = self._read()
            new = set_down(text, self.upstream, server, down)
            if new == text:
                return
            out = self._run(write_command(self.path, sha, new, self.reload), "rewriting + reload")
            if out.exit_code == 0:
                return
            time.sleep(0.05)  # EXIT_CHANGED: another worker wrote first; read again
        raise LoadBalancerError(f"{self.where()} kept changing; gave up after {self.attempts} tries")

    def _drain(self, host: Host) -> None:
        self._mark(host, True)

    def _disable(self, host: Host) -> None:
        self._mark(host, True)

    def _enable(self, host: Host) -> None:
        self._mark(host, False)

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
