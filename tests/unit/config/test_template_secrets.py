"""Lint: templates read only the secrets the app lists, from files inside the config repository.

A config repository is laid out like ``configs/``: ``apps/shop.yaml`` beside ``templates/``;
``airflow.cfg`` sits outside it. Every refusal is asserted as the exact line a user sees.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tars_operators.config.loader import load_app
from tars_operators.errors import ConfigError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
APP = """\
app: {name: shop, owner: web-team}
artifact: {url: "http://127.0.0.1:8000/shop-{{ version }}.tar.gz", checksum: {url: "{{ url }}.sha256"}}
hosts:
  list: [{name: web1, address: 127.0.0.21}, {name: web2, address: 127.0.0.22}]
ssh: {conn_id: shop_deploy}
service: {start: "bin/shop start", stop: "bin/shop stop"}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """tmp/configs/{apps,templates} and tmp/airflow.cfg (the controller's own secrets)."""
    (tmp_path / "configs" / "apps").mkdir(parents=True)
    (tmp_path / "configs" / "templates").mkdir()
    (tmp_path / "airflow.cfg").write_text("[core]\nfernet_key = not-for-hosts\n")
    return tmp_path


def app(repo: Path, tail: str, templates: dict[str, str] | None = None) -> Path:
    for name, text in (templates or {}).items():
        (repo / "configs" / "templates" / name).write_text(text)
    path = repo / "configs" / "apps" / "shop.yaml"
    path.write_text(APP + tail)
    return path


def errors(path: Path, repo: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_app(path, base_dir=repo)
    return caught.value.errors


DB_INI = "[db]\nuser = {{ conn.shop_db.login }}\npassword = {{ var.db_password }}\n"
TEMPLATE = """\
install:
  templates:
    - src: ../templates/db.ini.j2
      dest: config/db.ini
"""


def test_a_template_file_reading_an_unlisted_variable_is_refused_at_its_line_and_column(repo: Path) -> None:
    path = app(repo, TEMPLATE + "secrets: {connections: [shop_db]}\n", {"db.ini.j2": DB_INI})
    assert errors(path, repo) == [
        "configs/templates/db.ini.j2:3:15: install.templates[0]: expected a Variable listed in"
        " secrets.variables, got var.db_password; add 'db_password' to secrets.variables if this"
        " template may read it"]


def test_a_template_file_reading_an_unlisted_connection_is_refused_at_its_line_and_column(repo: Path) -> None:
    path = app(repo, TEMPLATE + "secrets: {variables: [db_password]}\n", {"db.ini.j2": DB_INI})
    assert errors(path, repo) == [
        "configs/templates/db.ini.j2:2:11: install.templates[0]: expected a Connection listed in"
        " secrets.connections, got conn.shop_db; add 'shop_db' to secrets.connections if this"
        " template may read it"]


def test_listed_secrets_pass(repo: Path) -> None:
    path = app(repo, TEMPLATE + "  post_install: ['echo {{ var.db_password }} | ./bin/set-password']\n"
               "secrets: {variables: [db_password], connections: [shop_db]}\n",
               {"db.ini.j2": DB_INI + "again = {{ var['db_password'] }}\n"})
    spec = load_app(path, base_dir=repo)
    assert spec.config.secrets.variables == ("db_password",) and spec.config.install.post_install


def test_a_source_outside_the_config_repository_is_refused_at_the_src_field(repo: Path) -> None:
    path = app(repo, "install:\n  templates:\n    - {src: ../../airflow.cfg, dest: config/app.cfg}\n")
    assert errors(path, repo) == [
        "configs/apps/shop.yaml:9:13: install.templates[0].src: expected a path inside the config"
        " repository (configs/, relative to shop.yaml), got '../../airflow.cfg', which resolves"
        " outside it"]


def test_an_absolute_source_is_refused_even_inside_the_repository(repo: Path) -> None:
    inside = repo / "configs" / "templates" / "ok.j2"
    inside.write_text("ok\n")
    path = app(repo, f"install:\n  templates:\n    - src: {inside}\n      dest: config/ok\n")
    assert errors(path, repo) == [
        "configs/apps/shop.yaml:9:12: install.templates[0].src: expected a path inside the config"
        f" repository (configs/, relative to shop.yaml), got an absolute path '{inside}'"]


def test_a_symlink_inside_the_repository_that_leads_out_of_it_is_refused(repo: Path) -> None:
    (repo / "configs" / "templates" / "app.cfg.j2").symlink_to(repo / "airflow.cfg")
    path = app(repo, "install:\n  templates:\n    - {src: ../templates/app.cfg.j2, dest: config/app.cfg}\n")
    assert errors(path, repo) == [
        "configs/apps/shop.yaml:9:13: install.templates[0].src: expected a path inside the config"
        " repository (configs/, relative to shop.yaml), got '../templates/app.cfg.j2', which"
        " resolves outside it"]


def test_tars_own_connections_cannot_be_listed_or_read(repo: Path) -> None:
    path = app(repo, TEMPLATE + "secrets: {connections: [tars_api, shop_deploy]}\n",
               {"db.ini.j2": "token = {{ conn.tars_api.password }}\n"})
    assert errors(path, repo) == [
        "configs/apps/shop.yaml:11:25: secrets.connections[0]: expected a connection templates may"
        " read, got 'tars_api', a Tars connection (tars_*); give the template its own connection"
        " with only what it needs",
        "configs/apps/shop.yaml:11:35: secrets.connections[1]: expected a connection templates may"
        " read, got 'shop_deploy', the SSH connection Tars logs in with (ssh.conn_id); give the"
        " template its own connection with only what it needs",
        "configs/templates/db.ini.j2:1:12: install.templates[0]: expected a Connection listed in"
        " secrets.connections, got conn.tars_api, a Tars connection (tars_*): templates may never"
        " read it"]


def test_dynamic_access_is_refused(repo: Path) -> None:
    dynamic = ("{% set name = 'db_password' %}{{ var[name] }}\n"
               "{{ var|attr('db_password') }}\n"
               "{{ conn.shop_db.password }} {{ conn|string }}\n")
    path = app(repo, TEMPLATE + "secrets: {variables: [db_password], connections: [shop_db]}\n",
               {"db.ini.j2": dynamic})
    literally = "used dynamically (subscript, filter, argument or assignment); name secrets literally"
    assert errors(path, repo) == [
        f"configs/templates/db.ini.j2:1:34: install.templates[0]: expected a literal var.<name>, got var {literally}",
        f"configs/templates/db.ini.j2:2:4: install.templates[0]: expected a literal var.<name>, got var {literally}",
        f"configs/templates/db.ini.j2:3:32: install.templates[0]: expected a literal conn.<name>, got conn {literally}"]


def test_inline_commands_point_at_the_yaml_field(repo: Path) -> None:
    path = app(repo, "install:\n  post_install:\n    - ./bin/seed\n    - 'echo {{ var.seed_token }} | ./bin/login'\n")
    assert errors(path, repo) == [
        "configs/apps/shop.yaml:10:7: install.post_install[1]: expected a Variable listed in"
        " secrets.variables, got var.seed_token; add 'seed_token' to secrets.variables if this"
        " template may read it"]


def test_fields_that_cannot_read_secrets_say_so(repo: Path) -> None:
    path = app(repo, "secrets: {variables: [shop_token]}\nhealth:\n  - {kind: command, command: 'check {{ var.shop_token }}'}\n")
    assert errors(path, repo) == [
        "configs/apps/shop.yaml:9:30: health[0].command: expected no var here (only"
        " install.templates files and install.pre_install/post_install can read secrets), got"
        " var.shop_token"]


def test_committed_configs_lint_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from tars_operators.cli import main
    from tests.unit.config.test_loader import sandbox_inventory

    monkeypatch.setenv("TARS_INVENTORY", str(sandbox_inventory(tmp_path / "inventory.yaml", 10)))
    monkeypatch.chdir(REPO)
    assert main(["lint", "configs/apps", "configs/examples"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "OK demo: configs/apps/demo.yaml" in out and "OK shop: configs/examples/full.yaml" in out
