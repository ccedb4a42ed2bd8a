"""The ``runtime`` section: what a host must have (``requires``) and how to give it (``assemble``).

Part of the app config schema (``config/schema.py`` puts it under ``AppConfig.runtime`` and
``hosts.groups.<g>.runtime``). Requirements are checked by ``assembly.requirements`` (one SSH
command per host), assemble steps run by ``assembly.steps``; docs/config.md documents both.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

# ">= 3.11", "==1.2.3", "< 4": one comparison against dotted numbers.
VERSION_CONSTRAINT = r"^\s*(>=|<=|==|!=|>|<)\s*[0-9]+(\.[0-9]+)*\s*$"
PACKAGE_NAME = r"^[A-Za-z0-9][A-Za-z0-9.+_:~=-]{0,127}$"
ACCOUNT_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$"
MODE = r"^0?[0-7]{3,4}$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Requirement(_Model):
    name: str | None = None  # shown in readiness tables; default: derived from the check


class CommandRequirement(_Requirement):
    """A command on PATH (or an absolute path), optionally with a version constraint."""

    kind: Literal["command"]
    command: str  # template: a name looked up on PATH, or an absolute path
    version: Annotated[str, Field(pattern=VERSION_CONSTRAINT)] | None = None
    # Run to read the version (the first dotted number of its output, stdout and stderr).
    version_command: str | None = None  # template; default: "<command> --version"


class PathRequirement(_Requirement):
    kind: Literal["path"]
    path: str  # template
    type: Literal["file", "dir", "any"] = "any"


class UserRequirement(_Requirement):
    kind: Literal["user"]
    user: Annotated[str, Field(pattern=ACCOUNT_NAME)]


class GroupRequirement(_Requirement):
    kind: Literal["group"]
    group: Annotated[str, Field(pattern=ACCOUNT_NAME)]


class PortRequirement(_Requirement):
    """A TCP port nobody listens on; checked only before the app's first start (no release
    current under the deploy root), since afterwards the app itself holds it."""

    kind: Literal["port"]
    port: Annotated[int, Field(ge=1, le=65535)] | str  # int or template
    # template: the IPv4 address the app binds; a listener there or on 0.0.0.0 / [::] takes the
    # port. Empty: a listener on any address does.
    address: str = ""


class FreeDiskRequirement(_Requirement):
    """Free space under ``deploy_root`` (or its nearest existing parent); exactly one of
    ``mb`` and ``artifact_times`` (lint: ``config/runtime_checks.py``)."""

    kind: Literal["free_disk"]
    mb: Annotated[float, Field(ge=0)] | None = None
    artifact_times: Annotated[float, Field(gt=0)] | None = None  # × the release's artifact size


class WritableRequirement(_Requirement):
    """``deploy_root`` exists and a file can be created in it (a real write, not ``test -w``)."""

    kind: Literal["writable"]


class ClockRequirement(_Requirement):
    kind: Literal["clock"]
    max_skew_seconds: Annotated[float, Field(gt=0)] = 5.0  # against the controller's clock


Requirement = Annotated[Union[CommandRequirement, PathRequirement, UserRequirement,
                              GroupRequirement, PortRequirement, FreeDiskRequirement,
                              WritableRequirement, ClockRequirement], Field(discriminator="kind")]


class _Step(_Model):
    name: str | None = None  # shown in results; default: derived from the step


class DirStep(_Step):
    kind: Literal["dir"]
    path: str  # template, absolute
    mode: Annotated[str, Field(pattern=MODE)] = "0755"
    owner: Annotated[str, Field(pattern=ACCOUNT_NAME)] | None = None
    group: Annotated[str, Field(pattern=ACCOUNT_NAME)] | None = None


class PackageStep(_Step):
    kind: Literal["package"]
    packages: Annotated[tuple[Annotated[str, Field(pattern=PACKAGE_NAME)], ...],
                        Field(min_length=1)]


class FileStep(_Step):
    """A file rendered from a jinja2 template (``src`` inside the config repository, read with
    the ``secrets`` rules of ``install.templates``) to an absolute ``dest`` on the host."""

    kind: Literal["file"]
    src: str
    dest: str  # template, absolute
    mode: Annotated[str, Field(pattern=MODE)] = "0644"
    owner: Annotated[str, Field(pattern=ACCOUNT_NAME)] | None = None
    group: Annotated[str, Field(pattern=ACCOUNT_NAME)] | None = None


class CommandStep(_Step):
    """A command run only when its guard says so (the Ansible habit); ``creates`` or
    ``unless`` is required (lint: ``config/runtime_checks.py``)."""

    kind: Literal["command"]
    command: str  # template, run with sh -ec
    creates: str | None = None  # template: skip when this path exists
    unless: str | None = None  # template: skip when this command exits 0


AssembleStep = Annotated[Union[DirStep, PackageStep, FileStep, CommandStep],
                         Field(discriminator="kind")]


class PackageManager(_Model):
    """How ``package`` steps check and install; ``{{ package }}``/``{{ packages }}`` are quoted."""

    check: str = "dpkg -s {{ package }} >/dev/null 2>&1"
    install: str = "DEBIAN_FRONTEND=noninteractive apt-get install -y {{ packages }}"


class Runtime(_Model):
    # refuse: a release with an unready host refuses before any host leaves rotation;
    # skip_unready: unready hosts are left out of the plan (the run note names them).
    policy: Literal["refuse", "skip_unready"] = "refuse"
    requires: tuple[Requirement, ...] = ()
    assemble: tuple[AssembleStep, ...] = ()
    packages: PackageManager = PackageManager()
