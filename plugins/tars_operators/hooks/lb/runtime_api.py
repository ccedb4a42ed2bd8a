"""HAProxy runtime API: speak it (unix socket or TCP, locally or on an LB host over SSH) and parse it.

One command per connection (HAProxy's non-interactive mode). Answers are text: errors such as
"No such server." come back as an answer, never as a failed connection, so callers check the
text. A socket that cannot be reached (missing, refused, EAGAIN when `stats maxconn` clients
are busy, timed out) raises ``LoadBalancerUnreachable`` at once: the LB base retries it with
backoff until ``traffic.api_deadline``.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import socket
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

from tars_operators.errors import LoadBalancerError, LoadBalancerUnreachable
from tars_operators.hooks.lb.base import Admin, ServerCounters
from tars_operators.hooks.lb.remote import CommandOutput

# Backend and server names go into a command line where ';' and spaces separate commands and
# arguments: anything else is refused before it reaches the socket.
SAFE_NAME = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")

# Admin state bits of `show servers state` (srv_admin_state), from HAProxy's server.h.
ADMIN_MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20 | 0x40  # forced, inherited, config, resolution, hostname
ADMIN_DRAIN_BITS = 0x08 | 0x10  # forced, inherited


@dataclass(frozen=True)
class StatRow:
    """The `show stat` fields Tars uses for one server (names from the CSV header)."""

    backend: str
    server: str
    sessions: int  # scur (field 5)
    status: str  # status (field 18)
    check_status: str
    check_desc: str  # check_desc + last_chk, e.g. "Layer4 connection problem: Connection refused"


def check_name(kind: str, value: str) -> str:
    """Refuse names the runtime API would parse as something else."""
    if not SAFE_NAME.match(value):
        raise LoadBalancerError(
            f"invalid HAProxy {kind} name {value!r}: only letters, digits and ._:@- are allowed"
        )
    return value


def _int(value: str) -> int:
    return int(value) if value.strip().isdigit() else 0


STAT_FIELDS = ("pxname", "svname", "scur", "status", "check_status", "check_desc", "last_chk")
COUNTER_FIELDS = ("pxname", "svname", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx",
                  "hrsp_other", "econ", "eresp", "rtime", "ttime")


def _stat_records(answer: str, backend: str | None, servers: Collection[str] | None,
                  fields: Sequence[str]) -> Iterator[dict[str, str]]:
    """`show stat` CSV records (``fields`` by header name): the server rows of ``backend`` (any
    backend when None), only those of ``servers`` when given. Rows are picked by their first two
    fields before the CSV is parsed: one server of a 2,000-server backend costs a few splits."""
    lines = answer.lstrip("# ").splitlines()
    if not lines or not lines[0].startswith("pxname,svname"):
        raise LoadBalancerError(f"unexpected `show stat` answer: {answer.strip()[:200]!r}")
    header = next(csv.reader(lines[:1]))
    at = [(name, header.index(name)) for name in fields if name in header]
    picked = []
    for line in lines[1:]:
        px, _, rest = line.partition(",")
        sv = rest.partition(",")[0]
        if (not sv or sv in ("FRONTEND", "BACKEND") or (backend is not None and px != backend)
                or (servers is not None and sv not in servers)):
            continue
        picked.append(line)
    for rec in csv.reader(picked):
        yield {name: rec[i] if i < len(rec) else "" for name, i in at}


def parse_show_stat(answer: str, backend: str | None = None,
                    servers: Collection[str] | None = None) -> list[StatRow]:
    """Server rows of `show stat` CSV (FRONTEND/BACKEND summary rows are left out): of
    ``backend`` and ``servers`` only when given."""
    rows = []
    for rec in _stat_records(answer, backend, servers, STAT_FIELDS):
        desc = rec.get("check_desc") or ""
        last = rec.get("last_chk") or ""
        rows.append(StatRow(
            backend=rec["pxname"], server=rec["svname"], sessions=_int(rec.get("scur") or ""),
            status=rec.get("status") or "", check_status=(rec.get("check_status") or "").strip("* "),
            check_desc=f"{desc}: {last}" if desc and last else desc or last,
        ))
    return rows


def parse_stat_counters(answer: str, backend: str,
                        servers: Collection[str] | None = None) -> dict[str, ServerCounters]:
    """Server name → its counters, for the servers of ``backend`` (``servers`` only when given)
    in a `show stat` answer."""
    counters = {}
    for rec in _stat_records(answer, backend, servers, COUNTER_FIELDS):
        server = rec["svname"]
        n = {k: _int(rec.get(k) or "") for k in (
            "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other",
            "econ", "eresp", "rtime", "ttime")}
        counters[server] = ServerCounters(
            server=server,
            responses=sum(n[k] for k in ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx",
                                         "hrsp_5xx", "hrsp_other")),
            r4xx=n["hrsp_4xx"], r5xx=n["hrsp_5xx"], errors=n["econ"] + n["eresp"],
            response_ms=float(n["rtime"]), total_ms=float(n["ttime"]),
        )
    return counters


def no_such_proxy(answer: str) -> bool:
    """HAProxy's answer to `show stat <backend> …` for a backend it does not have."""
    return answer.strip().startswith("No such proxy")


def backends_in_stat(answer: str) -> list[str]:
    """Backend names of a `show stat` answer (its BACKEND summary rows)."""
    lines = answer.lstrip("# ").splitlines()
    return [r[0] for r in csv.reader(lines[1:]) if len(r) > 1 and r[1] == "BACKEND"]


def parse_servers_state(answer: str, servers: Collection[str] | None = None) -> dict[str, Admin]:
    """Server name → admin state (ready/drain/maint) from `show servers state <backend>`; of
    ``servers`` only when given."""
    admin: dict[str, Admin] = {}
    lines = answer.strip().splitlines()
    header = next((ln[1:].split() for ln in lines if ln.startswith("#")), None)
    if not lines or lines[0].strip() != "1" or header is None:
        raise LoadBalancerError(f"unexpected `show servers state` answer: {answer.strip()[:200]!r}")
    name_at, admin_at = header.index("srv_name"), header.index("srv_admin_state")
    last = max(name_at, admin_at)
    for line in lines[1:]:
        fields = line.split(None, last + 1)
        if line.startswith("#") or len(fields) <= last:
            continue
        if servers is not None and fields[name_at] not in servers:
            continue
        bits = int(fields[admin_at])
        admin[fields[name_at]] = (
            "maint" if bits & ADMIN_MAINT_BITS else "drain" if bits & ADMIN_DRAIN_BITS else "ready"
        )
    return admin


# Runs on the LB host (python3 -c): send each command on its own connection, print a JSON list
# of the answers; exit 3 with the reason on stderr if the socket cannot be reached.
REMOTE_CLIENT = r"""
import json, socket, sys
target, timeout, cmds = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
def ask(cmd):
    try:
        if target.startswith("/"):
            s, addr = socket.socket(socket.AF_UNIX), target
        else:
            h, _, p = target.rpartition(":")
            s, addr = socket.socket(), (h, int(p))
        with s:
            s.settimeout(timeout); s.connect(addr); s.sendall(cmd.encode() + b"\n")
            return b"".join(iter(lambda: s.recv(65536), b"")).decode(errors="replace")
    except OSError as e:
        sys.stderr.write(str(e)); sys.exit(3)
print(json.dumps([ask(c) for c in cmds]))
"""
EXIT_UNREACHABLE = 3

Runner = Callable[[str, float], CommandOutput]


class RuntimeAPI:
    """A client of one HAProxy runtime API endpoint; ``runner`` set: reached over SSH."""

    def __init__(self, *, socket_path: str | None = None, address: str | None = None,
                 runner: Runner | None = None, via: str = "", timeout: float = 5.0) -> None:
        if bool(socket_path) == bool(address):
            raise LoadBalancerError("traffic.haproxy needs exactly one of `socket` or `address`")
        self.socket_path, self.address = socket_path, address
        self.runner, self.via = runner, via
        self.timeout = timeout

    def where(self) -> str:
        """e.g. "unix socket /run/haproxy.sock on lb1 (over SSH)"."""
        what = f"unix socket {self.socket_path}" if self.socket_path else f"TCP {self.address}"
        return f"{what} on {self.via} (over SSH)" if self.runner else what

    def ask(self, *commands: str) -> list[str]:
        """Answers of the commands, in order (one connection each)."""
        if self.runner is not None:
            return self._ask_remote(commands)
        return [self._ask_local(cmd) for cmd in commands]

    def _unreachable(self, exc: BaseException | str) -> LoadBalancerUnreachable:
        return LoadBalancerUnreachable(
            f"haproxy runtime API unreachable at {self.where()}: {exc}; is haproxy running with "
            f"`stats socket ... level admin` there? (traffic.haproxy.socket/address)"
        )

    def _connect(self) -> socket.socket:
        if self.socket_path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: str | tuple[str, int] = self.socket_path
        else:
            host, _, port = (self.address or "").rpartition(":")
            sock, target = socket.socket(socket.AF_INET, socket.SOCK_STREAM), (host, int(port))
        sock.settimeout(self.timeout)
        try:
            sock.connect(target)
        except BaseException:
            sock.close()
            raise
        return sock

    def _ask_local(self, cmd: str) -> str:
        try:
            with self._connect() as sock:
                sock.sendall(cmd.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            return b"".join(chunks).decode(errors="replace")
        except OSError as exc:  # missing, refused, EAGAIN, timeout: the base retries
            raise self._unreachable(exc) from exc
        except ValueError as exc:  # a port that is not a number: configuration, not an outage
            raise LoadBalancerError(f"traffic.haproxy.address {self.address!r}: {exc}") from exc

    def _ask_remote(self, commands: Sequence[str]) -> list[str]:
        assert self.runner is not None
        target = self.socket_path or self.address or ""
        cmd = " ".join(shlex.quote(a) for a in
                       ["python3", "-c", REMOTE_CLIENT, target, str(self.timeout), *commands])
        out = self.runner(cmd, self.timeout + 10.0)
        if out.exit_code != 0:
            reason = out.stderr.strip().splitlines()[-1:] or [f"exit code {out.exit_code}"]
            if out.exit_code in (None, EXIT_UNREACHABLE):
                raise self._unreachable(reason[0] if out.exit_code else f"timed out: {reason[0]}")
            raise LoadBalancerError(f"the runtime API client failed at {self.where()} "
                                    f"(exit code {out.exit_code}): {reason[0]}")
        try:
            answers = json.loads(out.stdout)
        except ValueError as exc:
            raise LoadBalancerError(f"unreadable answer from the runtime API client at "
                                    f"{self.where()}: {out.stdout[:200]!r}") from exc
        return [str(a) for a in answers]
