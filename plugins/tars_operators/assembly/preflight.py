"""Preflight: every planned host's ``runtime.requires`` checked in parallel, before any host
leaves rotation — one SSH round trip per host.

``check_hosts`` reads; ``decide`` applies ``runtime.policy`` (refuse with a per-host table, or
leave unready hosts out). A host that cannot be reached is reported but not judged here: the
release's own chain fails it within the failure budget, as before preflight existed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tars_operators.assembly.requirements import HostChecks, Readiness, host_checks, judge
from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import PlanError, RemoteError, TarsError

CHECK_AT_ONCE = 64  # SSH sessions opened in parallel
STEP = "preflight"
READINESS = "readiness"  # prepare's XCom key: every checked host's readiness


class HostNotReady(RemoteError):
    """A host misses a ``runtime.requires`` requirement; the message names each one."""


def needs_checks(spec: AppSpec, names: Iterable[str] | None = None) -> bool:
    """Whether any (of the named) hosts has requirements."""
    from tars_operators.assembly.requirements import runtime_for

    hosts = spec.hosts if names is None else [spec.host(n) for n in names]
    return any(runtime_for(spec, h).requires for h in hosts)


def check_session(session: object, spec: AppSpec, host: Host, *, cheap_only: bool = False,
                  artifact_bytes: int | None = None, step: str = STEP,
                  write_probe: bool = True) -> Readiness:
    """Check one host over an open ``HostSession`` (one command)."""
    checks = host_checks(spec, host, cheap_only=cheap_only, write_probe=write_probe)
    if not checks.requirements:
        return Readiness(host.name)
    before = time.time()
    result = session.run(checks.script, step=step, check=False,  # type: ignore[attr-defined]
                         timeout=min(60.0, spec.config.ssh.command_timeout),
                         label=f"check {len(checks.requirements)} requirement(s)")
    # The host's clock is read somewhere inside the round trip: compare with its middle.
    middle = (before + time.time()) / 2
    return judge(checks, result.stdout, controller_time=middle, artifact_bytes=artifact_bytes)


def check_host(spec: AppSpec, name: str, *, artifact_bytes: int | None = None) -> Readiness:
    """Open a session to ``name``, check its requirements; an unreachable host is an ``error``."""
    from tars_operators.hooks.ssh import open_session

    host = spec.host(name)
    try:
        with open_session(spec, host) as session:
            return check_session(session, spec, host, artifact_bytes=artifact_bytes)
    except TarsError as exc:
        text = str(exc)
        return Readiness(name, error=text.removeprefix(f"{name}: ").removeprefix(f"{STEP}: "))


def check_hosts(spec: AppSpec, names: Sequence[str], *,
                artifact_bytes: int | None = None) -> dict[str, Readiness]:
    """Every named host checked in parallel (never raises)."""
    names = list(dict.fromkeys(names))
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(CHECK_AT_ONCE, len(names))) as pool:
        found = pool.map(lambda n: check_host(spec, n, artifact_bytes=artifact_bytes), names)
        return dict(zip(names, found))


@dataclass(frozen=True)
class Preflight:
    """What preflight decided: the hosts to release, the skipped ones and the note lines."""

    keep: tuple[str, ...]
    skipped: tuple[str, ...]
    lines: tuple[str, ...]  # for the run note


def table(readiness: Iterable[Readiness]) -> str:
    """``host | requirement | found | expected`` rows of every unmet requirement."""
    rows = [("host", "requirement", "found", "expected")]
    for r in readiness:
        rows += [(r.host, v.requirement, v.found, v.expected) for v in r.missing]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def decide(spec: AppSpec, names: Sequence[str], found: dict[str, Readiness]) -> Preflight:
    """Apply ``runtime.policy``: a ``PlanError`` with the table, or the hosts to keep."""
    unready = [found[n] for n in names if n in found and not found[n].ready and not found[n].error]
    unchecked = [found[n] for n in names if n in found and found[n].error]
    lines = [f"preflight: {n} not checked ({found[n].error}); its chain decides"
             for n in (r.host for r in unchecked)]
    if not unready:
        return Preflight(tuple(names), (), tuple(lines))
    from tars_operators.assembly.requirements import runtime_for

    refuse = [r for r in unready if runtime_for(spec, spec.host(r.host)).policy == "refuse"]
    if refuse:
        raise PlanError(
            f"preflight: {len(refuse)} host(s) not ready: "
            + "; ".join(f"{r.host}: {r.describe()}" for r in refuse)
            + f" (no host left rotation); assemble them (tars assemble {spec.name} --hosts "
            + ",".join(r.host for r in refuse) + ") or set runtime.policy: skip_unready\n"
            + table(refuse))
    skipped = tuple(r.host for r in unready)
    keep = tuple(n for n in names if n not in skipped)
    if not keep:
        raise PlanError(f"preflight: no host is ready (skip_unready left none): "
                        + "; ".join(f"{r.host}: {r.describe()}" for r in unready)
                        + "\n" + table(unready))
    lines += [f"skipped (not ready): {r.host}: {r.describe()}" for r in unready]
    return Preflight(keep, skipped, tuple(lines))


def check_planned(spec: AppSpec, names: Sequence[str], *, artifact_bytes: int | None = None,
                  check: Callable[..., dict[str, Readiness]] = check_hosts) -> dict[str, Readiness]:
    """The named hosts that have requirements, checked; the others are not contacted."""
    from tars_operators.assembly.requirements import runtime_for

    wanted = [n for n in names if runtime_for(spec, spec.host(n)).requires]
    return check(spec, wanted, artifact_bytes=artifact_bytes) if wanted else {}


def preflight(spec: AppSpec, names: Sequence[str], *, artifact_bytes: int | None = None,
              check: Callable[..., dict[str, Readiness]] = check_hosts) -> Preflight:
    """Check ``names`` and decide; hosts without requirements are not contacted."""
    found = check_planned(spec, names, artifact_bytes=artifact_bytes, check=check)
    if not found:
        return Preflight(tuple(names), (), ())
    return decide(spec, names, found)


def readiness_entry(found: Readiness) -> dict[str, Any]:
    """One host's readiness as the views show it (JSON-safe, small): ``ready``, each unmet
    requirement as ``python3 >= 3.11 (found 3.9 (/usr/bin/python3))``, or why not checked."""
    return {"ready": found.ready,
            "missing": [f"{v.requirement} (found {v.found})" for v in found.missing],
            "error": found.error or None}


def readiness_record(found: Mapping[str, Readiness], checked_at: str) -> dict[str, Any]:
    """What ``prepare`` pushes as XCom ``readiness`` for the App view."""
    return {"checked_at": checked_at,
            "hosts": {name: readiness_entry(r) for name, r in found.items()}}


def recheck(session: object, spec: AppSpec, host: Host, *,
            artifact_bytes: int | None = None) -> Readiness | None:
    """The chain's re-check before pull-out (the clock left out); raises ``HostNotReady``."""
    checks: HostChecks = host_checks(spec, host, cheap_only=True)
    if not checks.requirements:
        return None
    found = check_session(session, spec, host, cheap_only=True, artifact_bytes=artifact_bytes,
                          step=STEP)
    if not found.ready:
        raise HostNotReady(host.name, STEP, f"not ready, left in rotation: {found.describe()}")
    return found


def artifact_size(spec: AppSpec, version: str) -> int | None:
    """The artifact's size in bytes, from a HEAD (or the file), for relative free-disk checks;
    None when unknown (then stage's own space check is the guard)."""
    from tars_operators.config.runtime import FreeDiskRequirement
    from tars_operators.assembly.requirements import runtime_for

    if not any(isinstance(r, FreeDiskRequirement) and r.artifact_times is not None
               for h in spec.hosts for r in runtime_for(spec, h).requires):
        return None
    try:
        import os
        from urllib.parse import unquote, urlparse

        from tars_operators.hooks.artifacts import artifact_url
        from tars_operators.hooks.http import client as http_client

        url = artifact_url(spec, version)
        if url.startswith("file://"):
            return os.stat(unquote(urlparse(url).path)).st_size
        with http_client() as http:
            r = http.head(url, follow_redirects=True, timeout=5.0)
        length = r.headers.get("content-length")
        return int(length) if r.status_code == 200 and length and length.isdigit() else None
    except Exception:  # the size is a hint: stage checks the real space needed anyway
        return None
