"""Health checks, smoke tests and notes share one TLS context per process.

httpx loads the whole CA bundle for every client it makes (≈24 ms of CPU); a release opens a
client per host for health and again for smoke, so the context is built once and shared.
"""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from tars_operators.hooks import http
from tars_operators.steps.checks import probe
from tars_operators.steps.evaluator import ResolvedCheck

pytestmark = pytest.mark.unit


@pytest.fixture
def contexts_built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    built = [0]
    real = ssl.create_default_context

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        built[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    http.tls_context.cache_clear()
    yield built
    http.tls_context.cache_clear()


@pytest.fixture
def health_server() -> Iterator[str]:
    class Ok(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()


def test_many_clients_and_probes_build_one_tls_context(contexts_built: list[int],
                                                       health_server: str) -> None:
    check = ResolvedCheck(name="health", kind="http", interval=0.1, timeout=2.0, successes=1,
                          url=health_server)
    for _ in range(3):
        with http.client() as client:
            assert probe(check, None, 2.0, client).ok
        assert probe(check, None, 2.0).ok  # a probe without a client makes its own
    assert contexts_built[0] == 1


def test_the_shared_context_verifies_certificates() -> None:
    ctx = http.tls_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
