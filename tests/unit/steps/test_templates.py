"""Run time: install templates and commands read only the listed secrets, from the config repo.

Real Airflow lookups (``AIRFLOW_VAR_<NAME>``, ``AIRFLOW_CONN_<ID>``), no host: rendering is
local. Specs are built without lint, so these are the run-time checks on their own.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from tars_operators.config.schema import AppConfig
from tars_operators.config.spec import AppSpec, Host
from tars_operators.errors import TemplateRefused
from tars_operators.steps.templates import install_context, render_commands, render_templates

pytestmark = pytest.mark.unit

DB_PASSWORD = "hunter2-pa55-Qx7"
DB_CONN_PASSWORD = "conn-pa55-Zr4"
HOST = Host("web1", "127.0.0.21", 22, None, MappingProxyType({}))


@pytest.fixture(autouse=True)
def airflow_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_DB_PASSWORD", DB_PASSWORD)
    monkeypatch.setenv("AIRFLOW_VAR_OTHER_SECRET", "not-for-this-app-1")
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_DB", json.dumps(
        {"conn_type": "postgres", "login": "app", "password": DB_CONN_PASSWORD, "host": "db.internal"}))
    monkeypatch.setenv("AIRFLOW_CONN_TARS_API", json.dumps({"conn_type": "http", "password": "api-token-77"}))


def spec_with(repo: Path, templates: dict[str, str], *, src: str | None = None, **install: Any) -> AppSpec:
    """An app in repo/configs/apps whose templates live in repo/configs/templates (or at ``src``)."""
    (repo / "configs" / "apps").mkdir(parents=True, exist_ok=True)
    (repo / "configs" / "templates").mkdir(exist_ok=True)
    for name, text in templates.items():
        (repo / "configs" / "templates" / name).write_text(text)
    config = AppConfig.model_validate({
        "app": {"name": "shop", "owner": "web"},
        "artifact": {"url": "http://127.0.0.1:8000/shop-{{ version }}.tar.gz", "checksum": {"url": "{{ url }}.sha256"}},
        "hosts": {}, "ssh": {"conn_id": "shop_deploy"},
        "install": {"deploy_root": "/srv/shop", "templates": [
            {"src": src or f"../templates/{name}", "dest": f"config/{name}"} for name in templates], **install},
        "secrets": {"variables": ["db_password"], "connections": ["shop_db", "tars_api"]},
        "service": {"start": "bin/start", "stop": "bin/stop"},
    })
    return AppSpec(config, (HOST,), repo / "configs" / "apps" / "shop.yaml")


def files(spec: AppSpec) -> dict[str, str]:
    rendered = render_templates(spec, HOST, install_context(spec, HOST, "1.0.0"))
    return {f.dest: f.content.decode() for f in rendered}


def test_listed_variable_and_connection_resolve(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, {"db.ini": "user={{ conn.shop_db.login }}@{{ conn.shop_db.host }}\n"
                                          "password={{ conn.shop_db.password }}\ntoken={{ var.db_password }}\n"})
    assert files(spec) == {"config/db.ini": f"user=app@db.internal\npassword={DB_CONN_PASSWORD}\n"
                                            f"token={DB_PASSWORD}\n"}


@pytest.mark.parametrize("text, refusal", [
    ("{{ var.other_secret }}", "expected a Variable listed in secrets.variables, got var.other_secret;"
                               " add 'other_secret' to secrets.variables if this template may read it"),
    ("{{ conn.other_db.password }}", "expected a Connection listed in secrets.connections, got"
                                     " conn.other_db; add 'other_db' to secrets.connections if this"
                                     " template may read it"),
    ("{{ conn.tars_api.password }}", "expected a Connection listed in secrets.connections, got"
                                     " conn.tars_api, a Tars connection (tars_*): templates may never read it"),
    ("{{ conn.shop_deploy.password }}", "expected a Connection listed in secrets.connections, got"
                                        " conn.shop_deploy, the SSH connection Tars logs in with"
                                        " (ssh.conn_id): templates may never read it"),
    ("{{ var|attr('other_secret') }}", "expected a Variable listed in secrets.variables, got"
                                       " var.other_secret; add 'other_secret' to secrets.variables"
                                       " if this template may read it"),
])
def test_an_unlisted_name_raises_naming_host_template_and_name(tmp_path: Path, text: str, refusal: str) -> None:
    spec = spec_with(tmp_path, {"app.cfg": f"x = {text}\n"})
    with pytest.raises(TemplateRefused) as caught:
        files(spec)
    assert str(caught.value) == f"web1: stage: template ../templates/app.cfg: {refusal}"


@pytest.mark.parametrize("src, shown", [
    ("../../airflow.cfg", "'../../airflow.cfg', which resolves outside it"),
    ("ABS", "an absolute path 'ABS'"),
])
def test_a_source_outside_the_config_repository_is_never_read(tmp_path: Path, src: str, shown: str) -> None:
    (tmp_path / "airflow.cfg").write_text("[core]\nfernet_key = {{ 'controller-secret' }}\n")
    src = src.replace("ABS", str(tmp_path / "airflow.cfg"))
    spec = spec_with(tmp_path, {"app.cfg": "never read"}, src=src)
    with pytest.raises(TemplateRefused) as caught:
        files(spec)
    assert str(caught.value) == (f"web1: stage: template {src}: expected a path inside the config repository"
                                 f" (configs/, relative to shop.yaml), got {shown.replace('ABS', src)}")


def test_commands_that_read_a_secret_become_scripts_and_the_others_stay_inline(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, {}, pre_install=["./bin/check {{ version }}"],
                     post_install=["echo {{ var.db_password }} | ./bin/set-password", "./bin/warm"])
    commands = render_commands(spec, HOST, install_context(spec, HOST, "1.0.0"))
    pre, post, scripts = commands.lines("/srv/shop/.tars-tmp/tpl-abc")
    assert pre == ["./bin/check 1.0.0"]
    assert post == ["sh -e /srv/shop/.tars-tmp/tpl-abc/post_install-0.sh", "./bin/warm"]
    assert [(s.path, s.content) for s in scripts] == [
        ("/srv/shop/.tars-tmp/tpl-abc/post_install-0.sh", f"echo {DB_PASSWORD} | ./bin/set-password\n".encode())]
    assert DB_PASSWORD not in repr(commands) + repr(scripts)


def test_a_command_reading_an_unlisted_name_raises(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, {}, post_install=["./bin/login {{ var.other_secret }}"])
    with pytest.raises(TemplateRefused, match=r"^web1: stage: install.post_install\[0\]: expected a Variable"
                                              r" listed in secrets.variables, got var.other_secret;"):
        render_commands(spec, HOST, install_context(spec, HOST, "1.0.0"))
