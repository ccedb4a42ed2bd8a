"""Stage entry, artifact fetch, and the per-host release task (mapped over a stage's hosts).

One task per host runs the whole chain stage → pull out → activate → health → smoke → pull in,
so a stage costs one scheduler hop and one worker start per host instead of six; each step's
result is kept in the task's XCom and log. The health wait moves to the triggerer when it
lasts longer than ``steps.health_defer_after`` (no worker slot held while an app warms up).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

from airflow.providers.standard.operators.empty import EmptyOperator

from tars_operators.errors import TarsError
from tars_operators.operators.base import SpecOperator
from tars_operators.redaction import redact_url
from tars_operators.release import hostflow
from tars_operators.release.brake import read_brake
from tars_operators.release.leases import RunLease
from tars_operators.release.machine import FETCH, Brake, Decision, before_host
from tars_operators.release.observe import record_before
from tars_operators.release.notes import (
    Progress, compose, failure_from_message, set_run_note, stage_label,
)
from tars_operators.release.runtime import (
    pushed_failures, run_plan, task_spec, stage_outcomes, stage_task_items,
)
from tars_operators.triggers.brake import BrakeReleasedTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

    from tars_operators.plan.ramp import ReleasePlan
    from tars_operators.release.batch import BatchOutcome
    from tars_operators.release.machine import StageOutcome


ARTIFACT = "artifact"  # fetch's XCom: the artifact it resolved (its URL without secrets)
REPORT_EVERY = 10.0  # seconds between a multi-host task's progress reports (XCom + run note)


def _map_index(context: Context) -> int:
    """The host's index in its stage: the task is mapped, so Airflow always sets it."""
    return cast(int, context["ti"].map_index)


class StageEntry(EmptyOperator):
    """A stage's entry on the run's path (gates read it to know they are on the path). The
    scheduler marks it done itself: no worker starts for it."""

    ui_color = "#eeeeee"


class EnterStageOperator(SpecOperator):
    """The entry of a stage canary analysis judges, after a bake or an approval (or with hosts
    on several queues): before any of its hosts is touched, the load balancer's counters
    (``release.observe.record_before``, the gate's baseline). Otherwise ``next_items``
    reads them."""

    ui_color = "#eeeeee"

    def __init__(self, *, stage: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.stage = stage

    def execute(self, context: Context) -> None:
        record_before(self.spec, self.stage, run_plan(context).hosts(self.stage), context["ti"],
                      self.log)


def next_items(context: Context, plan: ReleasePlan, stage: str, log: Any, *,
               record: bool) -> list[Any]:
    """What ``stage``'s release task maps over, returned by the task before its entry (fetch,
    or the previous gate) so the stage starts one scheduler pass after it. With hosts on
    several queues each queue's task maps over its picker's list instead (``operators.queues``).
    ``record``: nothing sits between this task and the stage, so canary analysis's counters
    before the stage are read here (else its entry reads them)."""
    hosts = plan.hosts(stage)
    items = stage_task_items(context, plan, stage)
    log.info("%s: %d host(s) in %d task(s): %s", stage, len(hosts),
             sum(len(i) for i in items.values()), ", ".join(hosts))
    spec = task_spec(context)
    if record and spec is not None:
        record_before(spec, stage, hosts, context["ti"], log)
    return next(iter(items.values())) if len(items) == 1 else []


def fetched_artifact(ti: Any) -> Any:
    """The artifact ``fetch`` resolved (its XCom ``artifact``), or None (a pull release)."""
    from tars_operators.hooks.artifacts import FetchedArtifact

    art = ti.xcom_pull(task_ids=FETCH, key=ARTIFACT)
    return FetchedArtifact.from_dict(art) if art else None


class FetchOperator(SpecOperator):
    """Resolve the artifact, download it once into the controller cache and verify its sha256;
    returns what the first stage's (``stage``) release task maps over."""

    ui_color = "#e6f4ea"

    def __init__(self, *, stage: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.stage = stage

    def execute(self, context: Context) -> list[Any]:
        plan = run_plan(context)
        try:
            art = self._fetch(plan.version)
            if art.path is not None:  # push: refuse an unsafe archive once, before any host
                from tars_operators.remote.archive import check_archive

                check_archive(art.path, self.spec.config.artifact.limits)
        except TarsError as exc:
            message = f"fetch {plan.version}: {exc} (no host was touched)"
            context["ti"].xcom_push(key="failure", value={"message": message})
            raise hostflow.StepFailed(message) from None
        self.log.info("artifact %s sha256 %s (%.2fs)", redact_url(art.url), art.sha256, art.seconds)
        context["ti"].xcom_push(key=ARTIFACT, value=dict(art.as_dict()))  # URL without secrets
        return next_items(context, plan, self.stage, self.log,
                          record=len(self.spec.queues) <= 1)

    def _fetch(self, version: str) -> Any:
        """Fetch, waiting out an unreachable or failing artifact server up to ``retry_for``."""
        from tars_operators.errors import ArtifactUnavailable
        from tars_operators.hooks.artifacts import fetch_artifact

        spec = self.spec
        deadline = time.monotonic() + spec.config.artifact.retry_for
        delay = 1.0
        while True:
            try:
                return fetch_artifact(spec, version)
            except ArtifactUnavailable as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ArtifactUnavailable(
                        f"{exc}; still failing after artifact.retry_for="
                        f"{spec.config.artifact.retry_for:g}s") from None
                self.log.warning("artifact server unavailable (%s); retrying in %.0fs", exc,
                                 min(delay, left))
                time.sleep(min(delay, left))
                delay = min(delay * 2, 15.0)


class ReleaseHostOperator(SpecOperator):
    """Release one host (``host`` a name) or several (``host`` a list: ``hosts_per_task``):
    brake check before each host, then the chain; returns the per-step results."""

    ui_color = "#d2e3fc"
    template_fields = ("host",)

    def __init__(self, *, stage: str, host: str | list[str], **kwargs: Any):
        super().__init__(**kwargs)
        self.stage = stage
        self.host = host
        self._settled_seen: tuple[ReleasePlan, list[StageOutcome]] | None = None
        self._noter: ThreadPoolExecutor | None = None

    def execute(self, context: Context) -> Any:
        if not isinstance(self.host, str):
            return self._run_many(context, {})
        brake = read_brake(self.spec.name)
        go = before_host(brake)
        if brake is not None and go is Decision.ROLLBACK:
            return self._untouched(context, f"brake asks for rollback ({brake.reason})")
        if brake is not None and go is Decision.WAIT:
            self.log.warning("brake pulled by %s (%s): %s waits, untouched", brake.by,
                             brake.reason, self.host)
            self._live_note(context, now=f"{self.host} waits for the brake", brake=brake)
            self.defer(trigger=BrakeReleasedTrigger(self.spec.name), method_name="after_brake")
        return self._run(context)

    def after_brake(self, context: Context, event: Any = None) -> dict[str, Any]:
        if event and event.get("brake") == "rollback":
            return self._untouched(context, f"brake asks for rollback ({event.get('reason')})")
        return self._run(context)

    def _job(self, context: Context) -> hostflow.HostJob:
        plan = run_plan(context)
        return hostflow.HostJob(
            spec=self.spec, host=self.spec.host(str(self.host)), version=plan.version,
            run_id=context["dag_run"].run_id, artifact=fetched_artifact(context["ti"]),
            index=_map_index(context), lease=RunLease.from_context(context, self.spec),
            progress=lambda now: self._note_aside(context, now=f"{self.host} {now}"),
        )

    def _note_aside(self, context: Context, *, now: str) -> None:
        """The live note from a thread of its own: the host's next step (its health check)
        never waits for a view (a note reads ≈20 XComs, seconds when nine tasks start at once)."""
        if self._noter is None:
            self._noter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="note")
        self._noter.submit(self._live_note, context, now=now)

    def _notes_written(self) -> None:
        """Wait for a note written aside: a later note (the failure, the end) must come after."""
        if self._noter is not None:
            self._noter.shutdown(wait=True)
            self._noter = None

    def _run(self, context: Context) -> dict[str, Any]:
        job = self._job(context)
        with hostflow.connected(job):
            try:
                pending = hostflow.run_until_health(job, log=self.log)
                if pending is None:
                    hostflow.finish(job, log=self.log)
            except TarsError as exc:
                self._fail(context, job, hostflow.failure(job, exc, log=self.log))
        self._notes_written()
        if pending is not None:  # the session is closed: nothing is held while waiting
            self.defer(trigger=pending.trigger, method_name="after_health",
                       kwargs={"done": job.results_dicts()})
        return job.summary("ok")

    def _fail(self, context: Context, job: hostflow.HostJob, message: str) -> None:
        """Leave the reason where gates and reports find it, then fail the task."""
        self._notes_written()
        context["ti"].xcom_push(key="failure", value=job.failure_record(message))
        self._live_note(context)
        raise hostflow.StepFailed(message)

    def _live_note(self, context: Context, *, now: str = "", brake: Brake | None = None) -> None:
        """The run note as this host's task sees the release now: its stage, what happens,
        every failure pushed so far (this host's too, before its task ends), the brake.

        Gates write the full note at each stage's end; this keeps it live in between.
        Never fails the task: the note is a view, the task log has the same facts.
        """
        try:
            plan, earlier = self._settled(context)
            outcomes = earlier + stage_outcomes(context, plan, upto=self.stage, since=self.stage)
            failures = {h: m for o in outcomes for h, m in o.why}
            if isinstance(self.host, str):  # a failed host whose task has not ended yet
                failures.update(pushed_failures(context["ti"], self.task_id))
            where = stage_label(self.stage, list(plan.stage_names))
            line = Progress(
                where, sum(len(o.succeeded) for o in outcomes), len(plan.all_hosts),
                plan.version, len(failures), plan.budget_total,
                brake if brake is not None else read_brake(self.spec.name),
                tuple(failure_from_message(h, m) for h, m in failures.items()), now,
            ).line()
            dr = context["dag_run"]
            set_run_note(dr.dag_id, dr.run_id, compose(line, plan.who, plan.reason, plan.ticket,
                                                       list(failures.values())))
        except Exception as exc:  # a note that cannot be written must not change the release
            self.log.warning("run note not updated: %s", exc)

    def _settled(self, context: Context) -> tuple[ReleasePlan, list[StageOutcome]]:
        """The run's plan and the outcomes of the stages before this one: read once per task
        (they are settled while it runs; a multi-host task reports every ``REPORT_EVERY``)."""
        if self._settled_seen is None:
            plan = run_plan(context)
            at = list(plan.slot_names).index(self.stage)
            self._settled_seen = (plan, stage_outcomes(context, plan, upto=plan.slot_names[at - 1])
                                  if at else [])
        return self._settled_seen

    def after_health(self, context: Context, event: Any = None,
                     done: list[Any] | None = None) -> Any:
        job = self._job(context)
        job.restore(done or [])
        try:
            hostflow.health_event(job, event, log=self.log)
            hostflow.finish(job, log=self.log)
        except TarsError as exc:
            self._fail(context, job, hostflow.failure(job, exc, log=self.log))
        return job.summary("ok")

    def _untouched(self, context: Context, why: str) -> dict[str, Any]:
        self.log.warning("%s untouched: %s", self.host, why)
        return hostflow.untouched(str(self.host), _map_index(context), why)

    # ---- several hosts in one task (strategy.hosts_per_task) ----------------------------
    def _run_many(self, context: Context, done: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Release this task's hosts, a few at once; every host's result is pushed (XCom
        ``host_results``) whatever happens, the failed ones' reasons too (``failure``)."""
        from tars_operators.plan.capacity import task_threads
        from tars_operators.release.batch import BatchOutcome, run_batch

        ti = context["ti"]
        hosts = [str(h) for h in self.host]
        plan = run_plan(context)
        artifact = fetched_artifact(ti)
        lease = RunLease.from_context(context, self.spec)
        run_id = context["dag_run"].run_id
        c = self.spec.config
        items = stage_task_items(context, plan, self.stage).get(self.task_id) or [hosts]
        before = items[:_map_index(context)]
        first = sum(1 if isinstance(i, str) else len(i) for i in before)  # index in the task
        index = {h: first + i for i, h in enumerate(hosts)}

        def job(name: str) -> hostflow.HostJob:
            return hostflow.HostJob(spec=self.spec, host=self.spec.host(name),
                                    version=plan.version, run_id=run_id, artifact=artifact,
                                    index=index[name], lease=lease)

        threads = task_threads(c.strategy.parallel, len(items), len(hosts), plan.fleet_size,
                               plan.min_in_service, pooled=c.traffic.pool is not None)
        retry = int(getattr(ti, "try_number", 1) or 1) > 1
        self.log.info("%d host(s), %d at once%s: %s", len(hosts), threads,
                      " (a retry: hosts this run already released are skipped)" if retry else "",
                      ", ".join(hosts))
        progress = BatchOutcome(results=dict(done))
        self._push_many(context, progress.ordered(hosts))
        # The views and the run note follow the task host by host, from a thread of their own:
        # a note reads every stage's XComs and the hosts must not wait for it.
        reporter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="report")
        last: dict[str, Any] = {"at": time.monotonic(), "job": None}

        # Every task pushes its hosts' results; the run note (which reads every task of the
        # stage) is rewritten on the way by the stage's first task, and by any on a failure.
        notes = _map_index(context) == 0

        def report(now: str, note: bool) -> None:
            self._push_many(context, progress.ordered(hosts))
            if note:
                self._live_note(context, now=now)

        def on_result(result: dict[str, Any]) -> None:
            progress.results[result["host"]] = result
            failed = result.get("state") == "failed"
            due = time.monotonic() - last["at"] >= REPORT_EVERY or failed
            if due and (last["job"] is None or last["job"].done()):
                last["at"] = time.monotonic()
                last["job"] = reporter.submit(report, f"{result['host']} {result['state']}",
                                              notes or failed)

        try:
            outcome = run_batch(hosts, threads=threads, job=job,
                                brake=lambda: read_brake(self.spec.name), done=done, retry=retry,
                                on_result=on_result, log=self.log)
        finally:
            reporter.shutdown(wait=True)
        return self._end_many(context, hosts, outcome)

    def _push_many(self, context: Context, results: list[dict[str, Any]]) -> None:
        ti = context["ti"]
        ti.xcom_push(key="host_results", value=results)
        failed = [{"host": r["host"], "message": r.get("message", ""), "phase": r.get("phase"),
                   "phases": r.get("phases", [])} for r in results if r.get("state") == "failed"]
        if failed:
            ti.xcom_push(key="failure", value=failed)

    def _end_many(self, context: Context, hosts: list[str],
                  outcome: BatchOutcome) -> list[dict[str, Any]]:
        results = outcome.ordered(hosts)
        self._push_many(context, results)
        if outcome.held:
            self._live_note(context, now=f"{len(outcome.held)} host(s) wait for the brake",
                            brake=outcome.brake)
            self.defer(trigger=BrakeReleasedTrigger(self.spec.name), method_name="after_brake_hosts",
                       kwargs={"done": outcome.results})
        failed = outcome.failed
        self._live_note(context)
        if failed:
            head = f"{len(failed)} of {len(hosts)} host(s) failed: "
            raise hostflow.StepFailed(head + "; ".join(str(r.get("message")) for r in failed[:5])
                                      + (" …" if len(failed) > 5 else ""))
        return results

    def after_brake_hosts(self, context: Context, event: Any = None,
                          done: dict[str, dict[str, Any]] | None = None) -> Any:
        """Back from the brake: go on with the held hosts, or leave them untouched (rollback)."""
        from tars_operators.release.batch import BatchOutcome

        done = dict(done or {})
        if event and event.get("brake") == "rollback":
            why = f"brake asks for rollback ({event.get('reason')})"
            hosts = [str(h) for h in self.host]
            for i, name in enumerate(hosts):
                if name not in done:
                    self.log.warning("%s untouched: %s", name, why)
                    done[name] = hostflow.untouched(name, i, why)
            return self._end_many(context, hosts, BatchOutcome(results=done))
        return self._run_many(context, done)
