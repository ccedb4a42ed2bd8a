"""The App view's Ready column: each host's readiness from the XComs prepare and the refresh
record, as of the newer one, and a hostile ``found`` text staying text on the page."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tars_operators.assembly.preflight import readiness_entry, readiness_record
from tars_operators.assembly.requirements import Readiness, Verdict
from tars_operators.operators.inspect import host_report
from tars_operators.release.truth import HostTruth
from tars_operators.web import views
from tars_operators.web.fleet import host_rows
from tars_operators.web.onhost import InspectRecord
from tars_operators.web.readiness import from_prepare, from_refresh, ready_cells
from tests.unit.assembly.test_assembly import make_spec

pytestmark = pytest.mark.unit
T = datetime(2026, 11, 30, 3, 0, tzinfo=timezone.utc)
HERE = Path(__file__).resolve()
STATIC = HERE.parents[3] / "plugins/tars_operators/web/static"
OLD_PYTHON = Verdict("python3 >= 3.11", False, "3.9.2 (/usr/bin/python3)", "python3 >= 3.11")
DISK = Verdict("free disk >= 200 MB", True, "900 MB free on /srv", ">= 200 MB free")


def prepared(at: str, found: dict[str, Readiness], run_id: str = "manual__1") -> Any:
    """prepare's XCom ``readiness`` as the App view reads it back."""
    return from_prepare("tars_deploy__demo", run_id, readiness_record(found, at))


def refreshed(read_at: str, found: dict[str, Readiness | None]) -> Any:
    """The inspect task's result (host reports with their readiness) as the view reads it."""
    reports = [host_report(HostTruth(name, current="1.0.0", status="good"),
                           readiness_entry(r) if r is not None else None)
               for name, r in found.items()]
    return from_refresh(InspectRecord("tars_inspect__demo", "manual__9", "success", T, T,
                                      "manual__9", {"read_at": read_at, "hosts": reports}))


def test_each_host_shows_the_newer_of_the_last_release_and_the_last_refresh() -> None:
    release = prepared("2026-11-30T02:00:00+00:00", {
        "h1": Readiness("h1", (DISK,)), "h2": Readiness("h2", (OLD_PYTHON, DISK)),
        "h3": Readiness("h3", error="cannot connect to 127.0.0.13:22: refused")})
    refresh = refreshed("2026-11-30T02:30:00+00:00", {
        "h1": Readiness("h1", (OLD_PYTHON,)), "h2": None, "h4": None})
    cells = ready_cells([("h1", True), ("h2", True), ("h3", True), ("h4", True), ("h5", False)],
                        [release, refresh])
    h1, h2, h3, h4, h5 = cells
    # Refreshed after the release: the refresh's word, and the cell says so.
    assert (h1.ready, h1.ready_text) == ("missing", "missing: python3 >= 3.11 (found 3.9.2 "
                                                    "(/usr/bin/python3))")
    assert (h1.ready_kind, h1.ready_run_id, h1.ready_at) == ("refresh", "manual__9",
                                                             "2026-11-30T02:30:00+00:00")
    # The refresh did not check it: the release's preflight still stands.
    assert h2.ready_text.startswith("missing: python3 >= 3.11") and h2.ready_kind == "release"
    assert (h2.ready_dag_id, h2.ready_run_id) == ("tars_deploy__demo", "manual__1")
    assert (h3.ready, h3.ready_text) == (
        "unknown", "unknown (not checked: cannot connect to 127.0.0.13:22: refused)")
    assert (h4.ready, h4.ready_text, h4.ready_kind) == ("unknown", "unknown", "")
    assert (h5.ready, h5.ready_text) == ("", "nothing required")
    # A release after the refresh wins in turn.
    later = prepared("2026-11-30T03:00:00+00:00", {"h1": Readiness("h1", (DISK,))}, "manual__2")
    h1_again = ready_cells([("h1", True)], [later, refresh])[0]
    assert (h1_again.ready, h1_again.ready_text, h1_again.ready_run_id) == ("ready", "ready",
                                                                            "manual__2")


def test_malformed_records_are_no_source() -> None:
    assert from_prepare("d", "r", ["not", "a", "dict"]) is None
    assert from_prepare("d", "r", {"checked_at": "x"}) is None
    assert from_refresh(None) is None


def test_the_column_is_shown_only_for_apps_with_requirements(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def read_readiness(session: Any, app: str) -> Any:
        asked.append(app)
        return prepared("2026-11-30T02:00:00+00:00", {"host01": Readiness("host01", (DISK,))})

    monkeypatch.setattr(views.records, "read_readiness", read_readiness)
    rows = host_rows([("host01", "dc1"), ("host02", "dc2")], [])
    plain = make_spec(tmp_path, {})
    assert views._ready(None, plain, "demo", rows, None)[0] is False
    assert asked == []  # an app without runtime costs no query
    spec = make_spec(tmp_path, {"requires": [{"kind": "writable"}]},
                     groups={"dc2": {"runtime": {"requires": []}}})
    shown, (h1, h2) = views._ready(None, spec, "demo", rows, None)
    assert shown and (h1.ready_text, h2.ready_text) == ("ready", "nothing required")
    # Without a readable config: shown when a run recorded readiness.
    shown, (h1, h2) = views._ready(None, None, "demo", rows, None)
    assert shown and (h1.ready, h2.ready) == ("ready", "unknown")


HOSTILE = "<img src=x onerror=alert(1)> 3.9 &amp; \"'"  # e.g. a version banner


# A DOM just big enough for app.js: elements record their children and text; setting
# innerHTML (or an on* attribute) throws, so only text can reach the page.
DOM_STUB = r"""
class Node {}
class Text extends Node { constructor(t) { super(); this.data = t; } get textContent() { return this.data; } }
class Element extends Node {
  constructor(tag) { super(); this.tag = tag; this.children = []; this.attrs = {}; this.dataset = {};
                     this.hidden = false; this.tBodies = []; this.className = ""; }
  set innerHTML(v) { throw new Error("innerHTML used: " + v); }
  setAttribute(k, v) { if (/^on/i.test(k)) throw new Error("handler " + k); this.attrs[k] = String(v); }
  append(...c) { for (const x of c) this.children.push(typeof x === "string" ? new Text(x) : x); }
  replaceChildren(...c) { this.children = []; this.append(...c); }
  addEventListener() {}
  querySelectorAll() { return []; }
  get textContent() { return this.children.map((c) => c.textContent).join(""); }
}
const byId = {};
const get = (id) => {
  if (!byId[id]) { byId[id] = new Element("x"); if (id === "hosts") byId[id].tBodies = [new Element("tbody")]; }
  return byId[id];
};
get("title").dataset.app = "demo";
globalThis.Node = Node;
globalThis.window = {top: null};
globalThis.document = {getElementById: get, createElement: (t) => new Element(t),
                       body: {dataset: {base: "/tars"}}};
globalThis.setInterval = () => 0;
globalThis.setTimeout = () => 0;
globalThis.fetch = async () => ({ok: true, json: async () => DATA});
const DATA = JSON.parse(process.argv[2]);
await import(process.argv[3]);
for (let i = 0; i < 20 && document.body.dataset.ready !== "true"; i++) await new Promise((r) => setImmediate(r));
const texts = (e) => e instanceof Text ? [e.data] : e.children.flatMap(texts);
const row = get("hosts").tBodies[0].children[0];
if (!row) { console.log(JSON.stringify({error: get("state").textContent})); process.exit(0); }
const last = row.children.at(-1);
console.log(JSON.stringify({cells: row.children.length, head: get("ready-head").hidden,
  cls: last.className, text: last.textContent, nodes: texts(last), state: get("state").textContent}));
"""


def run_app_js(tmp_path: Path, data: dict[str, Any]) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    for name in ("app.js", "tars.js"):
        shutil.copy(STATIC / name, tmp_path / name)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "stub.mjs").write_text(DOM_STUB)
    out = subprocess.run([node, str(tmp_path / "stub.mjs"), json.dumps(data),
                          (tmp_path / "app.js").as_uri()], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    shown: dict[str, Any] = json.loads(out.stdout)
    assert "error" not in shown, f"the page failed: {shown['error']}"
    return shown


def fleet_json(cell: Any, ready_column: bool) -> dict[str, Any]:
    from dataclasses import asdict

    host = {**asdict(host_rows([("host01", "dc1")], [])[0]), "datacenter": "dc1", "on_host": None,
            "on_host_status": "", "differs": False, "releases": [], "lb": "", "lb_status": "",
            "lb_source": "", "read_at": "", "read_error": "", "phase": "", **asdict(cell)}
    return {"summary": {"versions_text": "", "running": [], "brake": None, "last": None,
                        "window_open": True, "window": "always"},
            "hosts": [host], "ready_column": ready_column, "lb_note": "", "refresh": None,
            "history": [], "audit": [], "config_error": "", "can_edit": False}


def test_the_page_shows_a_hostile_found_text_as_typed(tmp_path: Path) -> None:
    found = Readiness("host01", (Verdict("python3 >= 3.11", False, HOSTILE, "python3 >= 3.11"),))
    [cell] = ready_cells([("host01", True)], [prepared("2026-11-30T02:00:00+00:00",
                                                       {"host01": found})])
    shown = run_app_js(tmp_path, fleet_json(cell, True))
    assert shown["head"] is False and shown["cells"] == 12
    assert shown["cls"] == "readiness missing reason"
    assert shown["nodes"][0] == f"missing: python3 >= 3.11 (found {HOSTILE})"  # one text node
    assert shown["text"].endswith(" as of release manual__1 at 2026-11-30 02:00:00 UTC")
    hidden = run_app_js(tmp_path, fleet_json(cell, False))
    assert hidden["head"] is True and hidden["cells"] == 11  # an app without runtime: no column


def test_records_read_the_newest_prepare_readiness_of_deploy_and_canary_runs() -> None:
    from types import SimpleNamespace

    from tars_operators.web import records

    value = json.dumps(readiness_record({"h1": Readiness("h1", (OLD_PYTHON,))},
                                        "2026-11-30T02:00:00+00:00"))

    class Session:
        def execute(self, statement: Any) -> Any:
            self.sql = str(statement.compile(compile_kwargs={"literal_binds": True}))
            row = SimpleNamespace(dag_id="tars_canary__demo", run_id="scheduled__1",
                                  task_id="prepare", map_index=-1, key="readiness", value=value)
            return SimpleNamespace(first=lambda: row)

    session = Session()
    source = records.read_readiness(session, "demo")  # type: ignore[arg-type]
    assert source is not None and (source.kind, source.dag_id, source.run_id) == (
        "release", "tars_canary__demo", "scheduled__1")
    assert source.hosts["h1"]["missing"] == ["python3 >= 3.11 (found 3.9.2 (/usr/bin/python3))"]
    sql = " ".join(session.sql.split())
    assert "xcom.dag_id IN ('tars_deploy__demo', 'tars_canary__demo')" in sql  # no rollback
    assert "xcom.task_id = 'prepare' AND xcom.key = 'readiness'" in sql
    assert sql.endswith("ORDER BY xcom.timestamp DESC LIMIT 1")


def test_each_readiness_state_has_its_own_colour() -> None:
    # A missing requirement in the warning colour, ready in the good one, unknown muted: one
    # rule per state (a rule like td.ready.ready matched every cell and painted "missing" green).
    css = (STATIC / "tars.css").read_text()
    colour = {state: re.findall(rf"td\.readiness\.{state}\b[^{{]*{{ color: var\(--(\w+)\)", css)
              for state in ("missing", "ready", "unknown")}
    assert colour == {"missing": ["on"], "ready": ["off"], "unknown": ["muted"]}
    assert not re.search(r"\.(\w+)\.\1\b", css), "a selector repeats a class: it matches more"
