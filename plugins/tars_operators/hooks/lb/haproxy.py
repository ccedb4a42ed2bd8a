"""HAProxy through its runtime API: `set server … state drain|maint|ready`, `show stat`,
`show servers state`.

A drained server's last check may predate its restart, and leaving MAINT HAProxy (2.6)
restores a server as "UP 1/2" from its last check *before* MAINT and sends it traffic at once.
So `enable` of a server that is not ready cycles it MAINT → DRAIN (no traffic either way):
HAProxy then shows it in transition ("DRAIN 1/2") until a new check has run, and only after
that check confirms it (status "DRAIN", or "DOWN" if it failed) is it set `ready`. This relies
on `fall` ≥ 2 (HAProxy's default is 3); with `fall 1` there is no transition to wait for.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable

from tars_operators.config.schema import Haproxy
from tars_operators.config.spec import AppSpec, Host, template_context
from tars_operators.config.templating import render
from tars_operators.errors import LoadBalancerError
from tars_operators.hooks.lb.base import (
    Admin, LoadBalancer, ServerCounters, ServerState, render_for_host,
)
from tars_operators.hooks.lb.runtime_api import (
    RuntimeAPI,
    StatRow,
    backends_in_stat,
    check_name,
    no_such_proxy,
    parse_servers_state,
    parse_show_stat,
    parse_stat_counters,
)
from tars_operators.hooks.lb.remote import SSHRunner, resolve_host


def _listing(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "(none)"


class HaproxyBalancer(LoadBalancer):
    """One backend of one HAProxy, reached on the controller or on ``lb_host`` over SSH."""

    provider = "haproxy"
    offers_counters = True

    def __init__(self, spec: AppSpec, api: RuntimeAPI | None = None) -> None:
        super().__init__(spec)
        conf = spec.config.traffic.haproxy
        if conf is None:
            raise LoadBalancerError("traffic.provider is haproxy but traffic.haproxy is not set")
        self.conf: Haproxy = conf
        ctx = template_context(spec, None, None)
        self.backend = check_name("backend", render(conf.backend, ctx))
        self.api = api or self._make_api(spec, conf, ctx)

    @staticmethod
    def _make_api(spec: AppSpec, conf: Haproxy, ctx: dict[str, object]) -> RuntimeAPI:
        socket_path = render(conf.socket, ctx) if conf.socket else None
        address = render(conf.address, ctx) if conf.address else None
        if not conf.lb_host:
            return RuntimeAPI(socket_path=socket_path, address=address)
        lb_host = resolve_host(spec, render(conf.lb_host, ctx))
        runner = SSHRunner(spec, lb_host, "haproxy runtime API")
        return RuntimeAPI(socket_path=socket_path, address=address, runner=runner, via=lb_host.name)

    def server_name(self, host: Host) -> str:
        return check_name("server", render_for_host(self.spec, host, self.conf.server,
                                                    "traffic.haproxy.server"))

    def where(self) -> str:
        return f"haproxy backend {self.backend!r} via {self.api.where()}"

    def close(self) -> None:
        runner = self.api.runner
        if isinstance(runner, SSHRunner):
            runner.close()

    # -- reading ---------------------------------------------------------------------------------
    def _read(self, servers: Collection[str]) -> tuple[dict[str, StatRow], dict[str, Admin]]:
        """`show stat` and `show servers state` of this backend, parsed for ``servers`` only."""
        stat, state = self.api.ask(f"show stat {self.backend} 4 -1",
                                   f"show servers state {self.backend}")
        if no_such_proxy(stat):
            (everything,) = self.api.ask("show stat")
            raise LoadBalancerError(
                f"no backend {self.backend!r} in haproxy at {self.api.where()}; "
                f"backends: {_listing(backends_in_stat(everything))} (traffic.haproxy.backend)"
            )
        rows = {r.server: r for r in parse_show_stat(stat, self.backend, servers)}
        if len(rows) < len(servers):  # name what the backend has instead
            rows = {r.server: r for r in parse_show_stat(stat, self.backend)}
        return rows, parse_servers_state(state, servers)

    def _missing(self, servers: list[str], rows: Iterable[str]) -> LoadBalancerError:
        names = ", ".join(repr(s) for s in servers)
        return LoadBalancerError(
            f"no server {names} in backend {self.backend!r}; it has: {_listing(rows)} "
            f"(traffic.haproxy.server renders to {names})"
        )

    def _states(self, hosts: list[Host]) -> dict[str, ServerState]:
        names = {host.name: self.server_name(host) for host in hosts}
        rows, admin = self._read(set(names.values()))
        missing = [server for server in names.values() if server not in rows]
        if missing:
            raise self._missing(missing, rows)
        return {
            host: ServerState(name=server, status=rows[server].status,
                              admin=admin.get(server, "unknown"), sessions=rows[server].sessions,
                              check_status=rows[server].check_status,
                              check_desc=rows[server].check_desc)
            for host, server in names.items()
        }

    def _state(self, host: Host) -> ServerState:
        return self._states([host])[host.name]

    def _counters(self, hosts: list[Host]) -> dict[str, ServerCounters]:
        names = {host.name: self.server_name(host) for host in hosts}
        (stat,) = self.api.ask(f"show stat {self.backend} 4 -1")
        rows = parse_stat_counters(stat, self.backend, set(names.values()))
        missing = [server for server in names.values() if server not in rows]
        if missing:
            raise self._missing(missing, parse_stat_counters(stat, self.backend))
        return {host: rows[server] for host, server in names.items()}

    # -- changing --------------------------------------------------------------------------------
    def _set_state(self, host: Host, admin: str) -> None:
        server = self.server_name(host)
        cmd = f"set server {self.backend}/{server} state {admin}"
        (answer,) = self.api.ask(cmd)
        answer = answer.strip()
        if not answer:
            return
        if answer.startswith("No such"):
            self.states([host])  # raises the message that lists what the LB has
        hint = " (the stats socket must be `level admin`)" if "ermission" in answer else ""
        raise LoadBalancerError(f"haproxy refused {cmd!r} at {self.api.where()}: {answer}{hint}")

    def _drain(self, host: Host) -> None:
        self._set_state(host, "drain")

    def _disable(self, host: Host) -> None:
        self._set_state(host, "maint")

    def _enable(self, host: Host) -> None:
        if self.state(host).admin != "ready":
            self._fresh_check(host)
        self._set_state(host, "ready")

    def _fresh_check(self, host: Host) -> None:
        """Cycle MAINT → DRAIN and wait for HAProxy to confirm the server with a new check."""
        self._set_state(host, "maint")
        self._set_state(host, "drain")
        timeout = self.spec.config.traffic.ready_timeout
        deadline = time.monotonic() + timeout
        state = self.state(host)
        while state.settling:
            if time.monotonic() >= deadline:
                raise LoadBalancerError(
                    f"{host.name}: no fresh health check result in haproxy within {timeout:g}s "
                    f"(traffic.ready_timeout); left in DRAIN: {state.describe()}"
                )
            time.sleep(self.poll_interval)
            state = self.state(host)
