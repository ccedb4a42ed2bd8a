"""Lint of the ``runtime`` section: ``file:line:col: path: message`` for each problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from tars_operators.config.loader import load_app
from tars_operators.errors import ConfigError

pytestmark = pytest.mark.unit

APP = """\
app: {name: demo, owner: team}
artifact: {url: "http://a/{{ version }}.tar.gz", checksum: {url: "{{ url }}.sha256"}}
hosts:
  list: [{name: host01, address: 127.0.0.11}]
  groups:
    dc1:
      runtime:
        requires:
          - {kind: port, port: 0}
service: {start: "true", stop: "true"}
secrets: {variables: [allowed]}
runtime:
  requires:
    - kind: command
      command: python3
      version: "about 3"
    - kind: free_disk
  assemble:
    - kind: dir
      path: "relative/{{ var.token }}"
    - kind: file
      src: ../templates/missing.j2
      dest: /etc/x
    - kind: file
      src: ../templates/env.j2
      dest: /etc/env
    - kind: command
      command: make
"""


def test_runtime_problems_name_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "apps").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "env.j2").write_text("A={{ var.allowed }}\nB={{ var.other }}\n")
    app = tmp_path / "apps" / "demo.yaml"
    app.write_text(APP)
    with pytest.raises(ConfigError) as err:
        load_app(app, base_dir=tmp_path)
    text = "\n".join(err.value.errors)
    assert ("apps/demo.yaml:9:32: hosts.groups.dc1.runtime.requires[0].port: expected a number "
            ">= 1, got 0") in text
    assert "apps/demo.yaml:16:16: runtime.requires[0].version: expected a string matching" in text
    # the template checks run once the section's fields are valid
    fixed = APP.replace('"about 3"', '">= 3"').replace("port: 0", "port: 80")
    app.write_text(fixed)
    with pytest.raises(ConfigError) as err:
        load_app(app, base_dir=tmp_path)
    text = "\n".join(err.value.errors)
    assert ("apps/demo.yaml:17:7: runtime.requires[1]: expected exactly one of 'mb' (absolute) "
            "or 'artifact_times'") in text
    assert "apps/demo.yaml:27:7: runtime.assemble[3]: expected a guard, 'creates' or 'unless'" in text
    assert ("apps/demo.yaml:20:13: runtime.assemble[0].path: expected an absolute path (or a "
            "template giving one), got 'relative/{{ var.token }}'") in text
    assert "runtime.assemble[0].path: expected no var here" in text
    assert "apps/demo.yaml:22:12: runtime.assemble[1].src: template file not found" in text
    assert "runtime.assemble[2].src:" in text and "var.other" in text and "var.allowed" not in text


def test_runtime_in_an_inventory_group_is_refused_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "apps").mkdir()
    (tmp_path / "inv.yaml").write_text("groups:\n  dc1:\n    vars: {a: 1}\n    runtime:\n"
                                       "      policy: skip_unready\n"
                                       "hosts:\n  - {name: h1, address: 127.0.0.1, group: dc1}\n")
    app = tmp_path / "apps" / "a.yaml"
    app.write_text('app: {name: a, owner: o}\nartifact: {url: "http://x/{{ version }}", '
                   'checksum: {url: "{{ url }}.sha256"}}\nhosts: {inventory: ../inv.yaml}\n'
                   'service: {start: "true", stop: "true"}\n')
    with pytest.raises(ConfigError) as err:
        load_app(app, base_dir=tmp_path)
    assert err.value.errors == [
        "inv.yaml:4:5: groups.dc1.runtime: runtime is read from the app config's hosts.groups, "
        "not an inventory; move it to hosts.groups.dc1.runtime of the app config"]
