"""A Prometheus-compatible HTTP API: one instant query → one number (canary analysis)."""

from __future__ import annotations

import math
from typing import Any

import httpx

from tars_operators.errors import AnalysisError
from tars_operators.hooks.http import client as http_client
from tars_operators.redaction import redact_url


class PrometheusClient:
    """``GET <url>/api/v1/query``; no I/O until asked."""

    def __init__(self, url: str, *, timeout: float = 5.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.transport = transport

    def value(self, query: str, *, at: float | None = None, what: str = "") -> float | None:
        """The query's one number at ``at`` (unix seconds; None: now); None when the result is
        empty or not a number (NaN: e.g. a rate of nothing over nothing)."""
        params: dict[str, Any] = {"query": query}
        if at is not None:
            params["time"] = f"{at:.3f}"
        where = f"prometheus at {redact_url(self.url)}" + (f" ({what})" if what else "")
        try:
            with http_client(timeout=self.timeout, transport=self.transport) as client:
                resp = client.get(f"{self.url}/api/v1/query", params=params)
        except httpx.HTTPError as exc:
            raise AnalysisError(f"{where}: unreachable: {exc} (analysis.prometheus.url)") from exc
        try:
            body = resp.json()
        except ValueError:
            raise AnalysisError(f"{where}: HTTP {resp.status_code}, not a JSON answer: "
                                f"{resp.text[:200]!r}") from None
        if resp.status_code != 200 or body.get("status") != "success":
            raise AnalysisError(f"{where}: query {query!r} refused (HTTP {resp.status_code}): "
                                f"{body.get('errorType', '')}: {body.get('error', '')}")
        return _number(body.get("data") or {}, query, where)


def _number(data: dict[str, Any], query: str, where: str) -> float | None:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        raw = result[1] if isinstance(result, list) and len(result) == 2 else None
    elif kind == "vector" and isinstance(result, list):
        if not result:
            return None
        if len(result) > 1:
            raise AnalysisError(f"{where}: query {query!r} returned {len(result)} series; "
                                f"expected one number per host (aggregate it, e.g. sum(...))")
        raw = result[0].get("value", [None, None])[1]
    else:
        raise AnalysisError(f"{where}: query {query!r} returned a {kind}; expected an instant "
                            f"vector or a scalar")
    try:
        number = float(str(raw))
    except ValueError:
        return None
    return number if math.isfinite(number) else None
