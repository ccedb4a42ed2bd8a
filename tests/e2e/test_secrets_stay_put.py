"""A secret-bearing webhook URL that fails never shows up in a log, a note, an XCom or the DAG.

The release is a real one under the real services (its fetch fails: a 404), so the webhook is
called by the finalizing task exactly as in production; the receiver answers 500.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.harness import E2E, poll

pytestmark = pytest.mark.e2e

SECRET = "s3cr3t-T0KEN-9f41c2"
PATH_SECRET = "B0PATHSECRET77"


class Receiver:
    """A loopback webhook endpoint that records what it got and answers 500."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                calls.append((self.path, body))
                self.send_response(500)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/services/{PATH_SECRET}?token={SECRET}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def files_containing(root: Path, *needles: str) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {n}" for n in needles if n.encode() in data]
    return found


def test_a_failing_webhook_leaks_its_secret_nowhere(e2e: E2E, receiver: Receiver) -> None:
    dag_id = e2e.add_app("hooked", **{"notify.webhooks": [
        {"url": receiver.url, "events": ["start", "success", "failure"]}]})
    run = e2e.release(dag_id, {"version": "9.9.9", "reason": "e2e: secret webhook"}, timeout=180)
    assert run["state"] == "failed", run
    poll(lambda: [c for c in receiver.calls if json.loads(c[1])["event"] == "failure"], 90,
         "the failure webhook to be called")
    assert all(SECRET in path for path, _ in receiver.calls)  # the real URL was used

    api = e2e.api
    run_id = run["dag_run_id"]
    assert SECRET not in (run.get("note") or "")
    # Every XCom of the run, and what Airflow shows of the DAG and its tasks.
    shown = [api.request("GET", f"/api/v2/dags/{dag_id}/details"),
             api.request("GET", f"/api/v2/dags/{dag_id}/tasks")]
    for ti in api.task_instances(dag_id, run_id):
        entries = api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/"
                                     f"{ti['task_id']}/xcomEntries",
                              params={"map_index": ti["map_index"]})["xcom_entries"]
        for entry in entries:
            shown.append(api.request(
                "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}"
                       f"/xcomEntries/{entry['key']}", params={"map_index": ti["map_index"]}))
    for item in shown:
        assert SECRET not in str(item) and PATH_SECRET not in str(item), item
    # Task logs and the logs of every Airflow component of the stack.
    logs = e2e.stack.home / "logs"
    assert files_containing(logs, SECRET, PATH_SECRET) == []
    warned = [p for p in logs.rglob("*") if p.is_file() and b"webhook http://127.0.0.1" in p.read_bytes()]
    assert warned, "the failed webhook was not logged at all"
