"""Every field of the app-config schema is read by Tars's code: a documented field that nothing
reads is a promise the code does not keep (``steps.health`` was one; it is gone).

A field counts as read when some module of ``plugins/tars_operators`` other than
``config/schema.py`` accesses it: ``x.<field>``, ``getattr(x, "<field>")`` or ``x["<field>"]``
(models dumped to dicts for XCom or a trigger). A name that several models define (``timeout``,
``retries``, ``url``…) could be "read" through another model's field, so each such field names
the module that reads it in ``READERS`` and that module must access it. ``EXEMPT`` lists the
fields read without an attribute access, each with the reason.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import pytest
from pydantic import BaseModel

from tars_operators.config import schema

pytestmark = pytest.mark.unit
PACKAGE = Path(schema.__file__).resolve().parents[1]  # plugins/tars_operators
SCHEMA = Path(schema.__file__).resolve()

# (model, field) → why no attribute access reads it.
EXEMPT: dict[tuple[str, str], str] = {
    ("HttpCheck", "kind"): "discriminator: picks the model; code branches on the model's type",
    ("TcpCheck", "kind"): "discriminator: picks the model; code branches on the model's type",
    ("CommandCheck", "kind"): "discriminator: picks the model; code branches on the model's type",
}
# (model, field) for names several models define → the module (under plugins/tars_operators)
# that reads that model's field.
READERS: dict[tuple[str, str], str] = {
    ("HostEntry", "address"): "config/inventory.py",
    ("HostEntry", "airflow"): "config/inventory.py",
    ("Group", "airflow"): "config/inventory.py",
    ("AppConfig", "airflow"): "factory/builder.py",
    ("TrafficPool", "name"): "release/pools.py",
    ("TcpCheck", "address"): "steps/evaluator.py",
    ("Haproxy", "address"): "hooks/lb/haproxy.py",
    ("CommandCheck", "command"): "steps/evaluator.py",
    ("Traffic", "command"): "hooks/lb/command.py",
    ("SSH", "conn_id"): "hooks/ssh.py",
    ("SmtpNotifier", "conn_id"): "release/notifiers.py",
    ("SlackWebhookNotifier", "conn_id"): "release/notifiers.py",
    ("SmtpNotifier", "kind"): "release/notifiers.py",
    ("SlackWebhookNotifier", "kind"): "release/notifiers.py",
    ("Window", "start"): "plan/windows.py",
    ("Window", "end"): "plan/windows.py",
    ("Freeze", "start"): "plan/windows.py",
    ("Freeze", "end"): "plan/windows.py",
    ("Service", "start"): "steps/activate.py",
    ("Haproxy", "lb_host"): "hooks/lb/haproxy.py",
    ("Nginx", "lb_host"): "hooks/lb/nginx.py",
    ("Haproxy", "server"): "hooks/lb/haproxy.py",
    ("Nginx", "server"): "hooks/lb/nginx.py",
    ("AppInfo", "name"): "config/spec.py",
    ("HostEntry", "name"): "config/inventory.py",
    ("_Check", "name"): "steps/evaluator.py",
    ("SSH", "retries"): "hooks/ssh.py",
    ("StepPolicy", "retries"): "steps/policy.py",
    ("_Check", "timeout"): "steps/evaluator.py",
    ("StepPolicy", "timeout"): "steps/policy.py",
    ("Steps", "smoke"): "steps/policy.py",
    ("AppConfig", "smoke"): "steps/checks.py",
    ("Checksum", "url"): "hooks/artifacts.py",
    ("Artifact", "url"): "hooks/artifacts.py",
    ("HttpCheck", "url"): "steps/evaluator.py",
    ("Webhook", "url"): "release/events.py",
    ("HostEntry", "vars"): "config/inventory.py",
    ("Group", "vars"): "config/inventory.py",
    ("Hosts", "vars"): "config/inventory.py",
    ("AppConfig", "runtime"): "assembly/requirements.py",
    ("Group", "runtime"): "assembly/requirements.py",
}


def models(module: object = schema) -> list[type[BaseModel]]:
    """The pydantic models defined in ``module``."""
    return [obj for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, BaseModel) and obj is not BaseModel
            and obj.__module__ == getattr(module, "__name__", None)]


def own_fields(model: type[BaseModel]) -> list[str]:
    """Fields ``model`` defines itself (inherited ones belong to the base that defines them)."""
    inherited = {name for base in model.__mro__[1:]
                 if isinstance(base, type) and issubclass(base, BaseModel) for name in base.model_fields}
    return [name for name in model.model_fields if name not in inherited]


def names_read(tree: ast.AST) -> set[str]:
    """``.name``, ``getattr(x, "name")`` / ``hasattr`` and ``x["name"]`` in a module."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            found.add(str(node.slice.value))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr") and len(node.args) > 1
              and isinstance(node.args[1], ast.Constant)):
            found.add(str(node.args[1].value))
    return found


@lru_cache(maxsize=1)
def readers() -> dict[str, set[str]]:
    """Module (relative to the package) → names it reads; config/schema.py left out."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        if path.resolve() != SCHEMA:
            out[path.relative_to(PACKAGE).as_posix()] = names_read(ast.parse(path.read_text()))
    return out


def unread(candidates: list[type[BaseModel]], code: dict[str, set[str]]) -> list[str]:
    """``Model.field`` of every field without a reader (see the module docstring)."""
    owners: dict[str, list[str]] = defaultdict(list)
    for model in models():
        for name in own_fields(model):
            owners[name].append(model.__name__)
    anywhere = set().union(*code.values())
    missing = []
    for model in candidates:
        for name in own_fields(model):
            key = (model.__name__, name)
            if key in EXEMPT:
                continue
            module = READERS.get(key)
            if module is not None:
                ok = name in code.get(module, set())
            else:
                ok = name in anywhere and len(owners[name]) <= 1
            if not ok:
                missing.append(f"{model.__name__}.{name}")
    return missing


def test_every_schema_field_is_read_by_the_code() -> None:
    missing = unread(models(), readers())
    assert not missing, (
        f"schema fields no code reads: {missing}. Wire each into the code its docs/config.md "
        "entry describes, or remove it (schema.REMOVED_FIELDS tells old configs what to do); "
        "a name other models share needs its reading module in READERS")


def test_a_new_field_nobody_reads_is_caught() -> None:
    class Service(schema.Model):  # a model as a later change might add to schema.py
        start: str
        restart_delay_seconds: float = 0.0  # documented, read by nothing

    found = unread([Service], readers())
    assert "Service.restart_delay_seconds" in found
    assert "Service.start" not in found  # a shared name, read where READERS says


def test_a_shared_name_read_only_for_another_model_is_caught() -> None:
    """``retries`` read for ``ssh`` does not count for ``steps.*`` (how steps.*.retries hid)."""
    code = {module: set(names) for module, names in readers().items()}
    code["steps/policy.py"].discard("retries")
    assert unread([schema.StepPolicy], code) == ["StepPolicy.retries"]
    assert unread([schema.SSH], code) == []


def test_the_tables_name_real_fields_and_modules() -> None:
    fields = {(m.__name__, f) for m in models() for f in own_fields(m)}
    assert set(EXEMPT) <= fields and set(READERS) <= fields
    assert all(module in readers() for module in READERS.values())
    shared = defaultdict(list)
    for model, name in fields:
        shared[name].append(model)
    needs = {(m, n) for n, ms in shared.items() if len(ms) > 1 for m in ms} - set(EXEMPT)
    assert needs <= set(READERS), f"name a reading module in READERS for {sorted(needs - set(READERS))}"


def test_removed_fields_are_not_in_the_schema() -> None:
    for path in schema.REMOVED_FIELDS:
        model: type[BaseModel] = schema.AppConfig
        for part in path[:-1]:
            annotation = model.model_fields[part].annotation
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
            model = annotation
        assert path[-1] not in model.model_fields
