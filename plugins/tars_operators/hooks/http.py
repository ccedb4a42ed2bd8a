"""HTTP clients that share one TLS context per process.

httpx builds a new SSL context for every client it makes, loading the whole CA bundle: ≈24 ms
of CPU here, more than the rest of a health check. Health checks, smoke tests, run notes,
preflight and notifications each open a client per host or per call, so they take the context
from here instead: built once, on first use (an ``ssl.SSLContext`` is safe to share between
threads and clients). It honours ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` as httpx does. The
threads of a multi-host task ask for it together at their first health check: one builds it,
the others wait for that one (not 16 builds at once).
"""

from __future__ import annotations

import functools
import ssl
import threading
from typing import Any

import httpx


_building = threading.Lock()


@functools.cache
def _made() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def tls_context() -> ssl.SSLContext:
    """httpx's default verifying context, made once per process (``functools.cache`` alone
    lets every thread that comes first build its own)."""
    with _building:
        return _made()


def client(**kwargs: Any) -> httpx.Client:
    """``httpx.Client(**kwargs)`` verifying with the shared context."""
    return httpx.Client(verify=tls_context(), **kwargs)


def async_client(**kwargs: Any) -> httpx.AsyncClient:
    """``httpx.AsyncClient(**kwargs)`` verifying with the shared context."""
    return httpx.AsyncClient(verify=tls_context(), **kwargs)
