"""The loader on real files: the demo and example configs, load_all, defaults, hosts, caching."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

from tars_operators.config import files
from tars_operators.config.inventory import expand_env
from tars_operators.config.loader import load_all, load_app
from tars_operators.config.yamlio import parse_fast, parse_with_positions
from tars_operators.errors import ConfigError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
APP = """\
app: {{name: {name}, owner: team}}
artifact:
  url: "http://127.0.0.1:8000/{name}-{{{{ version }}}}.tar.gz"
  checksum: {{url: "{{{{ url }}}}.sha256"}}
hosts:
  list:
    - {{name: a1, address: 127.0.0.31}}
    - {{name: a2, address: 127.0.0.32}}
service: {{start: "run start", stop: "run stop"}}
"""
SANDBOX_INVENTORY = """\
# written by `python -m sandbox up`; do not edit
vars:
  artifact_base: "http://127.0.0.1:18999"
  haproxy_socket: "/tmp/sb/haproxy.sock"
  haproxy_backend: demo
  frontend_url: "http://127.0.0.1:18998"
groups:
  dc1: {vars: {datacenter: dc1}}
  dc2: {vars: {datacenter: dc2}}
hosts:
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def sandbox_inventory(path: Path, hosts: int) -> Path:
    lines = [SANDBOX_INVENTORY]
    for i in range(1, hosts + 1):
        lines.append(
            f"  - name: host{i:02d}\n    address: 127.0.0.{10 + i}\n    ssh_port: 2222\n"
            f"    group: dc{1 if i <= (hosts + 1) // 2 else 2}\n"
            f'    vars: {{deploy_root: "/tmp/sb/hosts/host{i:02d}/app", app_port: 18080}}\n'
        )
    return write(path, "".join(lines))


def test_demo_config_loads_against_a_sandbox_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARS_INVENTORY", str(sandbox_inventory(tmp_path / "inventory.yaml", 10)))
    spec = load_app(REPO / "configs/apps/demo.yaml")
    assert spec.name == "demo" and spec.dag_id == "tars_deploy__demo"
    assert [h.name for h in spec.hosts] == [f"host{i:02d}" for i in range(1, 11)]
    host = spec.host("host07")
    assert host.vars["datacenter"] == "dc2" and host.vars["app_port"] == 18080
    assert host.vars["artifact_base"] == "http://127.0.0.1:18999"
    assert spec.global_vars["haproxy_socket"] == "/tmp/sb/haproxy.sock"
    cfg = spec.config
    assert cfg.traffic.haproxy is not None and cfg.traffic.haproxy.backend == "demo"
    assert cfg.ssh.conn_id == "tars_sandbox" and cfg.strategy.batches == (1, "25%", "100%")
    assert cfg.install.templates[0].dest == "config/app.json"


def test_demo_config_without_a_sandbox_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere" / "inventory.yaml"
    monkeypatch.setenv("TARS_INVENTORY", str(missing))
    with pytest.raises(ConfigError) as caught:
        load_app(REPO / "configs/apps/demo.yaml", base_dir=REPO)
    (line,) = caught.value.errors
    assert line.startswith("configs/apps/demo.yaml:")
    assert "hosts.inventory: inventory file not found: " + str(missing) in line
    assert line.endswith("run: python -m sandbox up")


def test_example_config_loads_cleanly() -> None:
    spec = load_app(REPO / "configs/examples/full.yaml")
    assert spec.name == "shop" and len(spec.hosts) == 4
    assert spec.host("web03").vars == {"app_port": 8080, "datacenter": "dc2"}


def test_load_all_keeps_good_apps_when_others_are_broken(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    write(apps / "a.yaml", APP.format(name="alpha"))
    write(apps / "b.yaml", APP.format(name="beta").replace("owner: team", "owner: [x]"))
    write(apps / "c.yml", APP.format(name="alpha"))
    write(apps / "notes.txt", "not a config")
    result = load_all(apps, base_dir=tmp_path)
    assert list(result.specs) == ["alpha"]
    assert sorted(p.name for p in result.errors) == ["b.yaml", "c.yml"]
    assert result.errors[apps / "b.yaml"].errors == [
        "apps/b.yaml:1:26: app.owner: expected a string, got a list"]
    assert result.errors[apps / "c.yml"].errors == [
        "apps/c.yml:1:13: app.name: app 'alpha' is already defined in apps/a.yaml"]


def test_defaults_merge_under_the_app_and_errors_point_at_defaults(tmp_path: Path) -> None:
    write(tmp_path / "defaults.yaml", """\
        ssh: {conn_id: shared, retries: 5}
        strategy: {batches: [1, 1], fort: 0}
    """)
    app = write(tmp_path / "apps/a.yaml", APP.format(name="alpha") + "ssh: {retries: 1}\n")
    spec = load_app(app)
    assert (spec.config.ssh.conn_id, spec.config.ssh.retries) == ("shared", 1)
    assert spec.config.strategy.batches == (1, 1) and spec.config.strategy.fort == 0
    write(tmp_path / "defaults.yaml", "ssh: {conn_id: shared, connect_timeout: soon}\n")
    with pytest.raises(ConfigError) as caught:
        load_app(app, base_dir=tmp_path)
    assert caught.value.errors == [
        "defaults.yaml:1:41: ssh.connect_timeout: expected a number, got 'soon'"]


def test_broken_defaults_are_reported_once_and_block_every_app(tmp_path: Path) -> None:
    write(tmp_path / "defaults.yaml", "ssh: [\n")
    write(tmp_path / "apps/a.yaml", APP.format(name="alpha"))
    result = load_all(tmp_path / "apps", base_dir=tmp_path)
    assert result.specs == {}
    assert result.errors[tmp_path / "defaults.yaml"].errors[0].startswith(
        "defaults.yaml:2:1: invalid YAML: ")
    assert result.errors[tmp_path / "apps/a.yaml"].errors == [
        "apps/a.yaml:1:1: not loaded: defaults.yaml has errors"]


def test_vars_merge_inventory_then_app_then_group_then_host(tmp_path: Path) -> None:
    write(tmp_path / "inv.yaml", """\
        vars: {a: inventory, b: inventory, c: inventory, d: inventory}
        groups: {g: {vars: {c: inv-group, d: inv-group}}}
        hosts:
          - {name: h1, address: 127.0.0.41, group: g, vars: {d: host}}
    """)
    config = APP.format(name="alpha").replace(
        "  list:\n", "  inventory: inv.yaml\n  vars: {b: app, c: app}\n"
        "  groups: {g: {vars: {e: app-group}}}\n  list:\n")
    spec = load_app(write(tmp_path / "x/a.yaml", config).rename(tmp_path / "a.yaml"))
    assert dict(spec.host("h1").vars) == {
        "a": "inventory", "b": "app", "c": "inv-group", "d": "host", "e": "app-group"}
    assert [h.name for h in spec.hosts] == ["h1", "a1", "a2"]
    assert spec.global_vars["b"] == "inventory"


def test_env_expansion_in_inventory_path() -> None:
    env = {"SET": "/x/inv.yaml", "EMPTY": ""}
    assert expand_env("${SET:-../inv.yaml}", env) == "/x/inv.yaml"
    assert expand_env("${UNSET:-../inv.yaml}", env) == "../inv.yaml"
    assert expand_env("${EMPTY:-d.yaml}", env) == "d.yaml"
    assert expand_env("${SET}", env) == "/x/inv.yaml"
    assert expand_env("plain/$HOME.yaml", env) == "plain/$HOME.yaml"
    with pytest.raises(ValueError, match="UNSET is not set"):
        expand_env("${UNSET}/inv.yaml", env)


def test_inventory_changes_on_disk_are_seen(tmp_path: Path) -> None:
    inv = write(tmp_path / "inv.yaml", "hosts: [{name: h1, address: 127.0.0.41}]\n")
    app = write(tmp_path / "a.yaml", APP.format(name="alpha").replace(
        "  list:\n", "  inventory: inv.yaml\n  list:\n"))
    assert len(load_app(app).hosts) == 3
    write(inv, "hosts: [{name: h1, address: 127.0.0.41}, {name: h2, address: 127.0.0.42}]\n")
    os.utime(inv, ns=(1, 10**9 * 3))  # a distinct mtime even on coarse-grained filesystems
    assert len(load_app(app).hosts) == 4
    files.clear_cache()


def test_yaml_cannot_build_python_objects(tmp_path: Path) -> None:
    app = write(tmp_path / "a.yaml", APP.format(name="alpha") + "x: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="invalid YAML: .*could not determine a constructor"):
        load_app(app, base_dir=tmp_path)


@pytest.mark.parametrize("doc", [
    "a: 1\nb: [1, 2.5, true, null, x, '3', 0x1f, 1e3, ~]\nc: 2024-01-01\n",
    "base: &b {x: 1, y: [1, 2]}\nuse:\n  <<: *b\n  y: 3\nagain: *b\n",
    "- a\n- {b: c}\n- - nested\n",
    "",
    "just a string",
    "k: |\n  multi\n  line\n",
    "yes: on\nno: off\n1: one\n0o7: x\n010: 1:30\n.inf: -.Inf\n",
    "a: !!str 123\nb: !!int '5'\nc: [!!float 1, !!bool 'true']\nd: {'q': \"w\", 'e': ''}\n",
    "n: [0, 007, 1_000, +5, -5, 10, 0x1f, 0b11, 1:30, 00, 08]\n",
    "x: &x [1, {y: &y z}]\nl: [*x, *y, *x]\nm: {<<: [{a: 1}, {a: 2, b: 3}], c: 4}\n",
])
def test_fast_parser_matches_safe_load(doc: str) -> None:
    assert parse_fast(doc) == yaml.safe_load(doc)
    assert parse_with_positions(doc)[0] == yaml.safe_load(doc)


def test_fast_parser_refuses_what_safe_load_refuses() -> None:
    for doc in ("? [a, b]\n: c\n", "a: !!python/name:os.system\n", "a: [1\n"):
        with pytest.raises(yaml.YAMLError):
            yaml.safe_load(doc)
        with pytest.raises(yaml.YAMLError):
            parse_fast(doc)


def test_positions_point_at_keys_and_values() -> None:
    _, positions = parse_with_positions("a:\n  b: [x, {c: 1}]\n")
    assert positions.locate(("a", "b"), at_key=True) == positions.spots[("a", "b")].key
    spot = positions.spots[("a", "b", 1, "c")]
    assert (spot.key.line, spot.key.col, spot.value.line, spot.value.col) == (2, 11, 2, 14)
    # A path below what the file has points at its deepest existing key.
    assert positions.locate(("a", "b", 0, "missing")).col == 7


def test_json_schema_in_docs_is_current() -> None:
    import json

    from tars_operators.config.jsonschema import app_config_schema

    committed = json.loads((REPO / "docs/app-config.schema.json").read_text())
    assert committed == app_config_schema(), "regenerate: tars schema --output docs/app-config.schema.json"


def test_parsed_yaml_is_cached_on_disk_as_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("TARS_CONFIG_CACHE_DIR", str(tmp_path / "cache"))
    app = write(tmp_path / "apps/a.yaml", APP.format(name="alpha"))
    files.clear_cache()
    assert load_app(app).name == "alpha"
    (entry,) = (tmp_path / "cache").glob("*.json")
    record = json.loads(entry.read_text())
    assert record["path"] == str(app) and record["data"]["app"]["name"] == "alpha"
    # A fresh process (empty memory cache) takes the data from disk, not from the YAML...
    record["data"]["app"]["owner"] = "from-cache"
    entry.write_text(json.dumps(record))
    files.clear_cache()
    assert load_app(app).config.app.owner == "from-cache"
    # ...until the file changes.
    write(app, APP.format(name="alpha").replace("owner: team", "owner: edited"))
    os.utime(app, ns=(1, 10**9 * 5))
    files.clear_cache()
    assert load_app(app).config.app.owner == "edited"
    files.clear_cache()


def test_yaml_that_json_cannot_hold_is_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARS_CONFIG_CACHE_DIR", str(tmp_path / "cache"))
    doc = write(tmp_path / "x.yaml", "when: 2024-01-01\n1: one\n")
    assert files.read_yaml(doc).data == {"when": __import__("datetime").date(2024, 1, 1), 1: "one"}
    assert not list((tmp_path / "cache").glob("*.json"))
    files.clear_cache()


def test_load_all_of_a_missing_directory_is_an_error_not_an_exception(tmp_path: Path) -> None:
    result = load_all(tmp_path / "nope", base_dir=tmp_path)
    assert result.specs == {}
    assert result.errors[tmp_path / "nope"].errors == ["nope: no such directory"]


def test_loading_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path) -> None:
    import gc

    good = write(tmp_path / "apps" / "a.yaml", APP.format(name="alpha"))
    write(tmp_path / "apps" / "b.yaml", "app: [broken\n")
    assert gc.isenabled()
    result = load_all(tmp_path / "apps")
    assert list(result.specs) == ["alpha"] and len(result.errors) == 1
    with pytest.raises(ConfigError):
        load_app(tmp_path / "apps" / "b.yaml")
    assert gc.isenabled()  # resumed after a good load and after a failed one
    gc.disable()
    try:
        load_app(good)
        assert not gc.isenabled()  # a caller's own pause is left alone
    finally:
        gc.enable()


def test_the_spec_keeps_hosts_once(tmp_path: Path) -> None:
    spec = load_app(write(tmp_path / "a.yaml", APP.format(name="alpha")))
    assert [h.name for h in spec.hosts] == ["a1", "a2"]
    assert spec.config.hosts.list == ()
    assert spec.default_plan is spec.default_plan  # planned once
