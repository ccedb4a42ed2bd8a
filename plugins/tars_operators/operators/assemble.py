"""``tars_assemble__<app>``: make hosts ready (``runtime.assemble``), check ``runtime.requires``,
then, if asked, put the app's good version on them, healthy and in rotation.

``assemble`` works on the listed hosts (none listed: the app's new hosts, those with no release
current), all at once; each step reports ``changed`` or ``unchanged``, and a dry run only
checks (``would change``). ``join`` installs the version the other hosts run as a good release
(or ``version``) on every assembled host that does not already run it in rotation.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import TarsError
from tars_operators.operators.base import SpecOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

ASSEMBLE, JOIN = "assemble", "join"
AT_ONCE = 16


def _new_hosts(spec: AppSpec) -> list[str]:
    """Hosts with no release current under their deploy root (never released to)."""
    from tars_operators.release.truth import read_truth

    truth = read_truth(spec, [h.name for h in spec.hosts], step=ASSEMBLE)
    return [n for n, t in truth.items() if not t.error and t.current is None]


def assemble_one(spec: AppSpec, host: Host, *, apply: bool) -> dict[str, Any]:
    """Steps then requirements on one host, one SSH session; never raises."""
    from tars_operators.assembly.preflight import check_session
    from tars_operators.assembly.steps import HostAssembly, assemble_host
    from tars_operators.hooks.ssh import open_session

    try:
        with open_session(spec, host) as session:
            done = assemble_host(session, spec, host, apply=apply)
            ready = check_session(session, spec, host, write_probe=apply)
    except TarsError as exc:
        return {**HostAssembly(host.name, error=str(exc)).as_dict(), "ready": False,
                "readiness": str(exc), "checks": []}
    return {**done.as_dict(), "ready": ready.ready, "readiness": ready.describe(),
            "checks": ready.as_dict()["checks"]}


class AssembleHostsOperator(SpecOperator):
    """Assemble the run's hosts in parallel; fails naming each host that is not ready after it."""

    ui_color = "#fef7e0"

    def execute(self, context: Context) -> dict[str, Any]:
        spec = self.spec
        params = context["params"]
        dry = bool(params.get("dry_run"))
        names = list(params.get("hosts") or []) or _new_hosts(spec)
        if not names:
            self.log.info("no new host (every host has a release current); nothing to assemble")
            self._note(context, "assemble: no new host to assemble", [])
            return {"dry_run": dry, "hosts": []}
        with ThreadPoolExecutor(max_workers=min(AT_ONCE, len(names))) as pool:
            rows = list(pool.map(lambda n: assemble_one(spec, spec.host(n), apply=not dry), names))
        lines = []
        for row in rows:
            for step in row["steps"]:
                self.log.info("%s %s: %s %s", row["host"], step["step"], step["state"], step["detail"])
            counts = _counts(row["steps"])
            lines.append(f"{row['host']}: {counts}; "
                         + ("ready" if row["ready"] else f"NOT READY: {row['readiness']}")
                         + (f"; error: {row['error']}" if row["error"] else ""))
        head = ("dry run: " if dry else "assembled: ") + ", ".join(names)
        self._note(context, head, lines)
        bad = [r for r in rows if r["error"] or (not dry and not r["ready"])]
        if bad:
            context["ti"].xcom_push(key="assembly", value={"dry_run": dry, "hosts": rows})
            raise AirflowFailException("; ".join(
                f"{r['host']}: " + (r["error"] or f"not ready after assembly: {r['readiness']}")
                for r in bad))
        return {"dry_run": dry, "hosts": rows}

    def _note(self, context: Context, head: str, lines: list[str]) -> None:
        from tars_operators.release.notes import compose, set_run_note

        dr = context["dag_run"]
        reason = str(context["params"].get("reason") or "")
        set_run_note(dr.dag_id, dr.run_id, compose(head, dr.triggering_user_name or "", reason,
                                                   "", lines))


def _counts(steps: list[dict[str, str]]) -> str:
    by: dict[str, int] = {}
    for s in steps:
        by[s["state"]] = by.get(s["state"], 0) + 1
    return ", ".join(f"{n} {state}" for state, n in by.items()) or "no steps"


class JoinHostsOperator(SpecOperator):
    """Install the app's good version on the assembled hosts and put them in rotation."""

    ui_color = "#d2e3fc"

    def execute(self, context: Context) -> dict[str, Any]:
        from tars_operators.assembly.join import already_joined, good_version, join_host
        from tars_operators.release.leases import RunLease
        from tars_operators.release.truth import read_truth

        params = context["params"]
        done = context["ti"].xcom_pull(task_ids=ASSEMBLE) or {}
        if not params.get("install") or done.get("dry_run"):
            self.log.info("install not asked (or a dry run): hosts left out of rotation")
            return {"installed": []}
        spec = self.spec
        names = [r["host"] for r in done.get("hosts", [])]
        if not names:
            return {"installed": []}
        truth = read_truth(spec, [h.name for h in spec.hosts], step=JOIN)
        try:
            version = str(params.get("version") or "") or good_version(spec, names, truth)
            art = self._artifact(spec, version)
        except TarsError as exc:
            raise AirflowFailException(f"join: {exc} (no host was changed)") from None
        lease = RunLease.from_context(context, spec)
        run_id = context["dag_run"].run_id

        def one(name: str) -> dict[str, Any]:
            if already_joined(truth.get(name), version):
                return {"host": name, "version": version, "state": "unchanged",
                        "detail": f"already runs {version} (good) in rotation", "steps": []}
            try:
                steps = join_host(spec, spec.host(name), version, art, run_id, lease=lease,
                                  log=self.log)
            except TarsError as exc:
                return {"host": name, "version": version, "state": "failed", "detail": str(exc),
                        "steps": []}
            return {"host": name, "version": version, "state": "changed",
                    "detail": f"runs {version}, healthy, in rotation",
                    "steps": [{"step": s.step, "state": s.state, "detail": s.detail} for s in steps]}

        with ThreadPoolExecutor(max_workers=min(AT_ONCE, len(names))) as pool:
            rows = list(pool.map(one, names))
        for row in rows:
            self.log.info("%s: %s: %s", row["host"], row["state"], row["detail"])
        failed = [r for r in rows if r["state"] == "failed"]
        if failed:
            raise AirflowFailException("; ".join(f"{r['host']}: {r['detail']}" for r in failed))
        return {"version": version, "installed": rows}

    def _artifact(self, spec: AppSpec, version: str) -> Any:
        from tars_operators.hooks.artifacts import fetch_artifact
        from tars_operators.remote.archive import check_archive

        art = fetch_artifact(spec, version)
        if art.path is not None:
            check_archive(art.path, spec.config.artifact.limits)
        return art
