"""Several hosts in one release task (``strategy.hosts_per_task``), as plain functions.

Each host still runs the whole chain of ``release.hostflow`` on its own SSH session; what the
task adds is bounded concurrency (threads, ``plan.capacity.task_threads``), the brake read before
hosts start (one read for all the hosts started at once: when the task begins, every free slot
is filled after one read), and one result per host: ``ok``, ``failed`` (with its message),
``untouched`` (a brake asked for rollback before the host started) or ``ok`` with ``skipped``
(a retry found the host on the version, good, and in rotation already). Hosts not started
while the brake holds are ``held``: the task waits for the brake with them, and only them,
still to do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from tars_operators.errors import TarsError
from tars_operators.release import hostflow
from tars_operators.release.machine import Brake, Decision, HostPhase, before_host
from tars_operators.tasklog import TaskLog

log_ = logging.getLogger(__name__)

OK_STATES = ("ok",)  # a skipped host's state is ok too: it is on the version and in rotation


@dataclass
class BatchOutcome:
    """Per host its result (the hosts' XCom ``host_results``); ``held``: not started because
    the brake holds (``brake``)."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    held: list[str] = field(default_factory=list)
    brake: Brake | None = None

    def ordered(self, hosts: Sequence[str]) -> list[dict[str, Any]]:
        """Every host's result in release order; a host without one yet is ``pending``."""
        return [self.results.get(h) or pending(h, i) for i, h in enumerate(hosts)]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results.values() if r.get("state") == "failed"]


def pending(host: str, index: int) -> dict[str, Any]:
    """A host the task has not finished (what the views show while it works or if it died)."""
    return {"host": host, "index": index, "state": "pending", "phase": HostPhase.PENDING.value,
            "phases": [HostPhase.PENDING.value], "steps": []}


def skipped(job: hostflow.HostJob, why: str) -> dict[str, Any]:
    """A host an earlier try of this run already released: reported, not touched again."""
    return {"host": job.host.name, "index": job.index, "state": "ok", "skipped": True,
            "version": job.version, "phase": HostPhase.IN_ROTATION.value,
            "phases": [HostPhase.IN_ROTATION.value], "seconds": 0.0, "steps": [], "detail": why}


def finished_earlier(job: hostflow.HostJob, session: Any) -> str | None:
    """Why the host needs nothing: it runs the version, marked good, and the load balancer has
    it in rotation (what an earlier try of this task left); else None."""
    from tars_operators.steps.state import layout_for, read_host_state

    state = read_host_state(session, layout_for(job.spec, job.host))
    meta = state.current_meta
    if state.current != job.version or meta is None or meta.status != "good":
        return None
    with hostflow._lb(job.spec) as lb:
        server = lb.state(job.host)
    if not (server.in_service and server.admin == "ready" and not server.settling):
        return None
    by = " (released by this run)" if meta.activated_run_id == job.run_id else ""
    return f"already on {job.version} (good) and in rotation{by}"


def release_one(job: hostflow.HostJob, *, log: TaskLog = log_, retry: bool = False) -> dict[str, Any]:
    """The whole chain on one host, health waited inline; never raises: a failure is a result."""
    try:
        with hostflow.connected(job) as session:
            if retry:
                session.connect("stage")
                why = finished_earlier(job, session)
                if why is not None:
                    log.info("%s: skipped, %s", job.host.name, why)
                    return skipped(job, why)
            hostflow.run_until_health(job, log=log, defer=False)
            hostflow.finish(job, log=log)
        return job.summary("ok")
    except Exception as exc:  # noqa: BLE001 - one host's failure (or bug) must not lose the others
        if not isinstance(exc, TarsError):
            log.error("%s: unexpected error: %r", job.host.name, exc)
        message = hostflow.failure(job, exc, log=log)
        return {**job.summary("failed"), "message": message}


def run_batch(hosts: Sequence[str], *, threads: int, job: Callable[[str], hostflow.HostJob],
              brake: Callable[[], Brake | None], done: Mapping[str, dict[str, Any]] | None = None,
              retry: bool = False, on_result: Callable[[dict[str, Any]], None] | None = None,
              log: TaskLog = log_) -> BatchOutcome:
    """Release ``hosts`` (those without a result in ``done``), at most ``threads`` at once.

    The brake is read before hosts start, once for the hosts started together (every free
    slot): on hold the hosts not started are ``held`` (the ones running finish first); on
    rollback they are left untouched.
    """
    out = BatchOutcome(results=dict(done or {}))
    todo = [h for h in hosts if h not in out.results]
    index = {h: i for i, h in enumerate(hosts)}
    running: dict[Future[dict[str, Any]], str] = {}
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="host") as pool:
        while todo or running:
            if todo and len(running) < threads and out.brake is None:
                pulled = brake()
                go = before_host(pulled)
                if pulled is not None and go is Decision.ROLLBACK:
                    why = f"brake asks for rollback ({pulled.reason})"
                    for name in todo:
                        log.warning("%s untouched: %s", name, why)
                        out.results[name] = hostflow.untouched(name, index[name], why)
                    todo = []
                elif pulled is not None and go is Decision.WAIT:
                    out.brake = pulled
                else:
                    starting, todo = todo[:threads - len(running)], todo[threads - len(running):]
                    for name in starting:
                        running[pool.submit(release_one, job(name), log=log, retry=retry)] = name
            if not running:
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                name = running.pop(fut)
                out.results[name] = fut.result()
                if on_result is not None:
                    on_result(out.results[name])
    if out.brake is not None:
        out.held = [h for h in todo]
        log.warning("brake pulled by %s (%s): %d host(s) held, untouched: %s", out.brake.by,
                    out.brake.reason, len(out.held), ", ".join(out.held))
    return out
