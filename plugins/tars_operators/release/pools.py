"""``traffic.pool``: the Airflow pool that bounds how many hosts one load balancer has out of
rotation at once, across every app and run that shares it.

Every host task (release, rollback, restore) of an app with ``traffic.pool`` takes one slot
of it while it runs, deferred waits included (a host waiting for health in the triggerer is
still out of rotation): the pool must count deferred tasks (``include_deferred``).

Who makes the pool: ``tars pools sync`` creates or resizes every pool the configs name, over
the REST API; ``prepare`` makes sure the run's pool exists before any host is touched
(creating it with the config's size when it is missing, turning ``include_deferred`` on) and
refuses the run when it cannot check: a task in a pool that does not exist would stay queued
with nothing saying why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tars_operators.errors import ConfigError, PoolError

if TYPE_CHECKING:
    from tars_operators.client.api import Airflow
    from tars_operators.config.spec import AppSpec
    from tars_operators.tasklog import TaskLog

DESCRIPTION = "Tars: hosts of one load balancer out of rotation at once (traffic.pool)"


@dataclass(frozen=True)
class PoolChange:
    """What to do to an existing (or missing) pool: create, patch some fields, or nothing."""

    name: str
    create: bool = False
    patch: tuple[tuple[str, Any], ...] = ()  # (field, new value)
    note: str = ""  # something worth a warning that Tars leaves as it is

    @property
    def body(self) -> dict[str, Any]:
        if self.create:
            return dict(self.patch, name=self.name, description=DESCRIPTION)
        return dict(self.patch)


def pool_change(name: str, slots: int, found: dict[str, Any] | None, *,
                resize: bool) -> PoolChange:
    """From the pool as the API shows it (None: missing) to one that works for ``traffic.pool``.

    ``resize``: ``tars pools sync`` sets the slots; ``prepare`` leaves another size as it is
    (someone sized it on purpose) and only says so.
    """
    if found is None:
        return PoolChange(name, create=True, patch=(("slots", slots), ("include_deferred", True)))
    patch: list[tuple[str, Any]] = []
    note = ""
    if not found.get("include_deferred"):
        patch.append(("include_deferred", True))
    if int(found.get("slots", 0)) != slots:
        if resize:
            patch.append(("slots", slots))
        else:
            note = (f"pool {name} has {found.get('slots')} slots, the config says {slots}: "
                    f"kept (tars pools sync sets it)")
    return PoolChange(name, patch=tuple(patch), note=note)


def apply(api: Airflow, change: PoolChange) -> None:
    """Create or patch the pool as ``change`` says (nothing when there is nothing to do)."""
    if change.create:
        api.request("POST", "/api/v2/pools", json=change.body)
    elif change.patch:
        api.request("PATCH", f"/api/v2/pools/{quote(change.name, safe='')}",
                    params={"update_mask": [k for k, _ in change.patch]}, json=change.body)


def read_pool(api: Airflow, name: str) -> dict[str, Any] | None:
    """The pool as the REST API shows it; None when there is none of that name."""
    from tars_operators.client.api import ApiError

    try:
        return api.obj("GET", f"/api/v2/pools/{quote(name, safe='')}")
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def wanted(specs: Iterable[AppSpec]) -> dict[str, int]:
    """Pool name → slots, from every app's ``traffic.pool``; apps disagreeing on a pool's
    size are a ``ConfigError`` naming them."""
    sizes: dict[str, dict[int, list[str]]] = {}
    for spec in specs:
        pool = spec.config.traffic.pool
        if pool is not None:
            sizes.setdefault(pool.name, {}).setdefault(pool.slots, []).append(spec.name)
    bad = [f"traffic.pool {name}: " + "; ".join(f"{', '.join(sorted(apps))} say {n} slots"
                                                 for n, apps in sorted(by.items()))
           for name, by in sorted(sizes.items()) if len(by) > 1]
    if bad:
        raise ConfigError([*bad, "apps sharing a pool must give it the same slots"])
    return {name: next(iter(by)) for name, by in sorted(sizes.items())}


def ensure_pool(spec: AppSpec, log: TaskLog) -> str | None:
    """Before any host is touched: the app's pool exists and counts deferred tasks. Returns a
    line for the log (None without ``traffic.pool``); raises ``PoolError`` when it cannot."""
    from tars_operators.client.api import ApiError

    pool = spec.config.traffic.pool
    if pool is None:
        return None
    fix = (f"create it: tars pools sync, or airflow pools set {pool.name} {pool.slots} "
           f"'{DESCRIPTION}' --include-deferred")
    try:
        api = task_api()
        change = pool_change(pool.name, pool.slots, read_pool(api, pool.name), resize=False)
        apply(api, change)
    except (ApiError, LookupError) as exc:
        raise PoolError(f"traffic.pool {pool.name}: cannot check the pool ({exc}); a host task "
                        f"in a missing pool stays queued; {fix}") from None
    if change.note:
        log.warning("%s", change.note)
    done = ("created" if change.create else
            "set " + ", ".join(k for k, _ in change.patch) if change.patch else "ready")
    return f"pool {pool.name} ({pool.slots} slots, deferred tasks count): {done}"


def task_api() -> Airflow:
    """The REST API as tasks reach it: the ``tars_api`` connection (as for run notes)."""
    from airflow.sdk import BaseHook

    from tars_operators.client.api import Airflow
    from tars_operators.release.notes import API_CONN_ID

    try:
        conn = BaseHook.get_connection(API_CONN_ID)
    except Exception as exc:  # Airflow's "not defined" error has no common type across versions
        raise LookupError(f"connection {API_CONN_ID!r}: {exc}") from None
    return Airflow(f"{conn.schema or 'http'}://{conn.host}:{conn.port or 8080}",
                   user=conn.login or "", password=conn.password or "", timeout=10)
