"""The app config schema: one YAML file per application, validated strictly (pydantic v2).

Every model is frozen and rejects unknown keys. Field names here are the contract with
every team that writes a config; ``docs/config.md`` documents them with their defaults.
String fields documented as templates are jinja2, rendered per host at run time with
``app``, ``version``, ``host``, ``vars``, ``deploy_root`` and ``release_dir``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tars_operators.config.analysis import Analysis

from tars_operators.config.runtime import Runtime

SAFE_NAME = r"^[a-z][a-z0-9_]{0,62}$"
HOST_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
DEFAULT_VERSION_PATTERN = r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?$"

# A count of hosts (>= 0) or a percentage of the fleet such as "25%".
Size = Union[Annotated[int, Field(ge=0)], Annotated[str, Field(pattern=r"^(100|[1-9]?[0-9])%$")]]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
HHMM = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AppInfo(Model):
    name: Annotated[str, Field(pattern=SAFE_NAME)]
    owner: str
    description: str = ""
    tags: tuple[str, ...] = ()


class Checksum(Model):
    """Where the expected sha256 comes from: a checksum-file URL template and/or inline sums."""

    url: str | None = None  # template, e.g. "{{ url }}.sha256" (sha256sum format or bare hex)
    sha256: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = {}  # version -> hex


class ArchiveLimits(Model):
    """What an artifact may unpack to: checked on the controller (push) or the host (pull)
    before anything is unpacked, while the host still serves the live release."""

    max_members: Annotated[int, Field(ge=1)] = 20_000
    max_member_mb: Annotated[float, Field(gt=0)] = 2048.0  # one member, unpacked
    max_unpacked_mb: Annotated[float, Field(gt=0)] = 4096.0  # all members, unpacked
    # Free space left under deploy_root after unpacking, or staging is refused.
    min_free_mb: Annotated[float, Field(ge=0)] = 256.0
    # setuid/setgid/sticky bits in the archive: stripped on unpack, or the archive refused.
    special_bits: Literal["strip", "refuse"] = "strip"


class Artifact(Model):
    url: str  # template with {{ version }}; http://, https:// or file://
    checksum: Checksum
    version_pattern: str = DEFAULT_VERSION_PATTERN
    delivery: Literal["push", "pull"] = "push"  # push: controller → SFTP; pull: host downloads
    latest_url: str | None = None  # template of a pointer file holding the latest version
    # How long fetch retries (with backoff) while the artifact server is unreachable or
    # answers 5xx; a 404 or a checksum mismatch fails at once.
    retry_for: Annotated[float, Field(ge=0)] = 60.0
    limits: ArchiveLimits = ArchiveLimits()

    @field_validator("version_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:  # not a ValueError: pydantic would let it escape
            raise ValueError(f"expected a valid regular expression, got '{value}': {exc}") from None
        return value


class HostAirflow(Model):
    """Where a host's tasks run: ``queue`` is the Celery queue of a worker that reaches it
    (None: the executor's default queue)."""

    queue: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")] | None = None


class HostEntry(Model):
    name: Annotated[str, Field(pattern=HOST_NAME)]
    address: str
    ssh_port: Annotated[int, Field(ge=1, le=65535)] = 22
    group: str | None = None
    vars: dict[str, Any] = {}
    airflow: HostAirflow = HostAirflow()  # wins over its group's


class Group(Model):
    vars: dict[str, Any] = {}
    runtime: Runtime | None = None  # replaces the app's runtime fields it sets
    airflow: HostAirflow = HostAirflow()


class Hosts(Model):
    inventory: str | None = None  # YAML inventory file, relative to the config file
    list: tuple[HostEntry, ...] = ()
    groups: dict[str, Group] = {}
    vars: dict[str, Any] = {}  # app-wide variables (override the inventory's global vars)


class SSH(Model):
    conn_id: str = "tars_ssh"
    user: str | None = None  # overrides the connection's login
    connect_timeout: Annotated[float, Field(gt=0)] = 10.0
    command_timeout: Annotated[float, Field(gt=0)] = 300.0
    retries: Annotated[int, Field(ge=0, le=10)] = 2  # connection attempts beyond the first


class ConfigTemplate(Model):
    src: str  # jinja2 file, relative to the config file
    dest: str  # path inside the release directory
    mode: Annotated[str, Field(pattern=r"^0?[0-7]{3}$")] = "0644"


class Install(Model):
    deploy_root: str = "/srv/{{ app.name }}"  # template
    keep_releases: Annotated[int, Field(ge=2, le=100)] = 5
    templates: tuple[ConfigTemplate, ...] = ()
    pre_install: tuple[str, ...] = ()  # run inside the new release dir before it is final
    post_install: tuple[str, ...] = ()  # run after the release dir is in place


class Service(Model):
    start: str  # template; run on the host
    stop: str
    restart: str | None = None  # default: stop then start
    status: str | None = None
    ignition_seconds: Annotated[float, Field(ge=0)] = 0.0  # warm-up after start


class _Check(Model):
    name: str | None = None
    interval: Annotated[float, Field(gt=0)] = 1.0
    timeout: Annotated[float, Field(gt=0)] = 60.0  # overall deadline for the check
    successes: Annotated[int, Field(ge=1)] = 1  # consecutive successes needed


class HttpCheck(_Check):
    kind: Literal["http"]
    url: str  # template, e.g. "http://{{ host.address }}:{{ vars.app_port }}/health"
    expect_status: int = 200
    expect_body: str | None = None  # substring the body must contain
    request_timeout: Annotated[float, Field(gt=0)] = 5.0


class TcpCheck(_Check):
    kind: Literal["tcp"]
    port: int | str  # int or template
    address: str = "{{ host.address }}"


class CommandCheck(_Check):
    kind: Literal["command"]
    command: str  # template, run on the host
    expect_exit: int = 0


Check = Annotated[Union[HttpCheck, TcpCheck, CommandCheck], Field(discriminator="kind")]


class Haproxy(Model):
    socket: str | None = None  # unix socket path (template), on the controller or lb_host
    address: str | None = None  # "host:port" of a TCP runtime API
    lb_host: str | None = None  # reach the socket over SSH on this host (inventory name/address)
    backend: str
    server: str = "{{ host.name }}"  # template: the server name in the backend


class Nginx(Model):
    lb_host: str  # address of the nginx host, reached over SSH
    upstream_file: str
    upstream: str
    reload: str = "nginx -s reload"
    server: str = "{{ host.address }}:{{ vars.app_port }}"
    pid_file: str = "/run/nginx.pid"  # the master's pid: its workers show when a reload took effect
    drain_seconds: Annotated[float, Field(ge=0)] | None = None  # wait instead of watching workers


class CommandLB(Model):
    """Any other load balancer (Consul, a cloud LB, F5): user commands, templates per host."""

    run_on: Literal["controller", "host"] = "controller"
    drain: str  # take the host out of rotation
    enable: str  # put it back
    state: str | None = None  # must print one of UP / DOWN / DRAIN / MAINT


class TrafficPool(Model):
    """An Airflow pool: how many hosts of this load balancer may be out of rotation at once,
    across every app and run that names it (release/pools.py)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$")]
    slots: Annotated[int, Field(ge=1)]


class Traffic(Model):
    provider: Literal["haproxy", "nginx", "command", "none"] = "none"
    haproxy: Haproxy | None = None
    nginx: Nginx | None = None
    command: CommandLB | None = None
    drain_timeout: Annotated[float, Field(ge=0)] = 30.0
    ready_timeout: Annotated[float, Field(gt=0)] = 30.0
    api_deadline: Annotated[float, Field(ge=0)] = 60.0  # seconds an unreachable LB API is retried
    min_in_service: Size = "50%"
    pool: TrafficPool | None = None  # shared with the other apps behind this load balancer


class Approval(Model):
    enabled: bool = False
    after: tuple[str, ...] = ("fort",)  # stage names: fort, batch_1, batch_2, …
    timeout_seconds: Annotated[float, Field(gt=0)] = 3600.0
    default: Literal["continue", "rollback", "halt"] = "rollback"


class FailureBudget(Model):
    per_stage: Size = 0
    total: Size = 0


class Strategy(Model):
    fort: int | tuple[str, ...] = 1  # count, or host names; 0 = no fort stage
    batches: tuple[Size, ...] = (1, "25%", "100%")  # Ansible-style ramp; last size repeats
    bake_seconds: Annotated[float, Field(ge=0)] = 0.0
    approval: Approval = Approval()
    failure_budget: FailureBudget = FailureBudget()
    on_failure: Literal["rollback", "halt"] = "rollback"
    parallel: Annotated[int, Field(ge=1)] = 32  # max hosts of one stage worked on at once
    # Hosts one release task works on (threads inside it); auto: 1 for stages of up to 3 hosts,
    # else 2–8 tasks per stage. Any stage size fits Airflow's 1024 mapped tasks.
    hosts_per_task: Union[Literal["auto"], Annotated[int, Field(ge=1)]] = "auto"


class Window(Model):
    days: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
    start: HHMM
    end: HHMM


class Freeze(Model):
    start: str  # ISO date or datetime, in the schedule timezone
    end: str
    reason: str = ""


class Canary(Model):
    cron: str  # when to run a canary of the latest artifact to the fort stage
    then: Literal["stop", "approval"] = "stop"


class Schedule(Model):
    timezone: str = "UTC"
    windows: tuple[Window, ...] = ()  # empty: always open
    freezes: tuple[Freeze, ...] = ()
    outside_window: Literal["wait", "reject"] = "wait"
    canary: Canary | None = None


class StepPolicy(Model):
    """One host step's bound and retries (read by ``steps.policy``)."""

    timeout: Annotated[float, Field(gt=0)] | None = None  # one attempt; None: no bound of its own
    retries: Annotated[int, Field(ge=0, le=10)] = 0  # attempts after a failure that may pass


class Steps(Model):
    stage: StepPolicy = StepPolicy(timeout=600)
    pull_out: StepPolicy = StepPolicy(timeout=120)
    activate: StepPolicy = StepPolicy(timeout=300)
    smoke: StepPolicy = StepPolicy()
    pull_in: StepPolicy = StepPolicy(timeout=120)
    host_retries: Annotated[int, Field(ge=0, le=5)] = 0  # Airflow retries of a host's task
    # Health checks wait inline this long, then hand the wait to the triggerer (no worker slot).
    health_defer_after: Annotated[float, Field(ge=0)] = 10.0
    # How long a run waits for a host held by another Tars run of the app (deploy, canary,
    # rollback) before that host counts as failed, untouched.
    lease_wait: Annotated[float, Field(ge=0)] = 300.0


# Fields that were documented and never read, now gone: a config that sets one gets this
# message at the key (lint and DAG import), so nobody keeps believing it does something.
REMOVED_FIELDS: dict[tuple[str, ...], tuple[str, str]] = {  # path -> (why, what to do)
    ("steps", "health"): (
        "removed (it was never applied): a health check already retries every "
        "health[].interval until its health[].timeout, with health[].successes in a row",
        "delete steps.health and set timeout, interval and successes on the health checks"),
}


Event = Literal["start", "stage_passed", "approval_needed", "brake", "rollback", "success",
                "failure"]
EVENT_ALIASES = {"approval": "approval_needed"}  # older names, still accepted


class _Subscriber(Model):
    events: tuple[Event, ...] = ("start", "success", "failure")

    @field_validator("events", mode="before")
    @classmethod
    def _old_names(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return tuple(EVENT_ALIASES.get(v, v) if isinstance(v, str) else v for v in value)
        return value


class Webhook(_Subscriber):
    """A URL that gets a JSON POST for each of ``events`` (see docs/config.md ``notify``)."""

    url: str


# A notifier's subject/body may use these, substituted as plain text in one pass: not jinja
# (the values are user text such as a release reason, never rendered).
MESSAGE_FIELDS = ("app", "event", "summary", "details", "run_id", "version", "at")
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def _message_template(value: str | None) -> str | None:
    if value is None:
        return None
    rest = PLACEHOLDER.sub(lambda m: "" if m.group(1) in MESSAGE_FIELDS else m.group(0), value)
    bad = re.search(r"\{[{%#].*?(?:[}%#]\}|$)", rest)
    if bad:
        shown = ", ".join("{{ %s }}" % f for f in MESSAGE_FIELDS)
        raise ValueError(f"expected plain text with the placeholders {shown} only (not jinja), "
                         f"got '{bad.group(0)}'")
    return value


class SmtpNotifier(_Subscriber):
    """Mail through Airflow's SMTP provider (``SmtpNotifier``) and an SMTP connection."""

    kind: Literal["smtp"]
    to: Annotated[tuple[Annotated[str, Field(min_length=3, pattern=r"^[^\s,;]+@[^\s,;]+$")], ...],
                  Field(min_length=1)]
    from_: str | None = Field(default=None, alias="from")  # default: the connection's from_email
    conn_id: str = "smtp_default"
    subject: Annotated[str, Field(min_length=1)] | None = None  # placeholders: MESSAGE_FIELDS
    body: Annotated[str, Field(min_length=1)] | None = None

    @field_validator("to", mode="before")
    @classmethod
    def _one_address(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("subject", "body")
    @classmethod
    def _placeholders(cls, value: str | None) -> str | None:
        return _message_template(value)


class SlackWebhookNotifier(_Subscriber):
    """A Slack message through Airflow's Slack provider (``SlackWebhookNotifier``); the
    connection holds the webhook (its token is the password)."""

    kind: Literal["slack_webhook"]
    conn_id: str = "slack_default"
    text: Annotated[str, Field(min_length=1)] | None = None  # placeholders: MESSAGE_FIELDS

    @field_validator("text")
    @classmethod
    def _placeholders(cls, value: str | None) -> str | None:
        return _message_template(value)


# Kinds by name, a closed set: a config never names an import path.
Notifier = Annotated[Union[SmtpNotifier, SlackWebhookNotifier], Field(discriminator="kind")]


class Notify(Model):
    webhooks: tuple[Webhook, ...] = ()
    notifiers: tuple[Notifier, ...] = ()


class Secrets(Model):
    """The only Airflow Variables and Connections that install templates and hooks may read
    (``{{ var.<name> }}``, ``{{ conn.<id>.password }}``); anything else is refused at lint."""

    variables: tuple[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,249}$")], ...] = ()
    connections: tuple[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,249}$")], ...] = ()


class AirflowSettings(Model):
    paused_on_creation: bool = False
    max_active_tasks: Annotated[int, Field(ge=1)] = 32


class AppConfig(Model):
    """One application: the whole YAML file (after merging configs/defaults.yaml)."""

    app: AppInfo
    artifact: Artifact
    hosts: Hosts
    ssh: SSH = SSH()
    install: Install = Install()
    secrets: Secrets = Secrets()
    service: Service
    health: tuple[Check, ...] = ()
    smoke: tuple[Check, ...] = ()
    traffic: Traffic = Traffic()
    strategy: Strategy = Strategy()
    schedule: Schedule = Schedule()
    steps: Steps = Steps()
    notify: Notify = Notify()
    airflow: AirflowSettings = AirflowSettings()
    analysis: Analysis = Analysis()  # canary analysis (config/analysis.py)
    runtime: Runtime = Runtime()  # host requirements and assembly (config/runtime.py)
