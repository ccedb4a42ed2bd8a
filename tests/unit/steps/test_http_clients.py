"""Health checks, smoke tests and notes share one TLS context per process.

httpx loads the whole CA bundle for every client it makes (≈24 ms of CPU); a release opens a
client per host for health and again for smoke, so the context is built once and shared.
"""

from __future__ import annotations

import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import httpx
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
    http._made.cache_clear()
    yield built
    http._made.cache_clear()


def test_many_clients_and_probes_build_one_tls_context(contexts_built: list[int]) -> None:
    ok = httpx.MockTransport(lambda request: httpx.Response(200, text="ok"))
    # Port 1 on loopback: nothing listens, the probe fails fast (a client was still made).
    closed = "http://127.0.0.1:1/health"
    check = ResolvedCheck(name="health", kind="http", interval=0.1, timeout=2.0, successes=1,
                          url=closed)
    for _ in range(3):
        with http.client(transport=ok) as client:
            assert client.get(closed).text == "ok"
        assert not probe(check, None, 2.0).ok  # a probe without a client makes its own
    assert contexts_built[0] == 1


def test_threads_that_ask_together_build_one_context(contexts_built: list[int]) -> None:
    # A multi-host task's threads reach their first health check at the same moment.
    start = threading.Barrier(16)

    def first_use(_: int) -> ssl.SSLContext:
        start.wait()
        return http.tls_context()

    with ThreadPoolExecutor(max_workers=16) as pool:
        got = list(pool.map(first_use, range(16)))
    assert contexts_built[0] == 1 and all(ctx is got[0] for ctx in got)


def test_the_shared_context_verifies_certificates() -> None:
    ctx = http.tls_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
