"""Secret-bearing URLs never reach a log, a note, an XCom or an error message.

Webhook URLs carry their credentials in the path (``hooks.slack.com/services/T…/B…/<key>``) or
the query (``?token=…``); artifact URLs may be pre-signed (``?X-Amz-Signature=…``). Messages
show ``redact_url``'s form; ``mask_url`` also registers the secret parts with Airflow's secrets
masker, so text that slips through (a library's exception, a traceback) is masked in task logs.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

HIDDEN = "***"


def redact_url(url: str, *, keep_path: bool = True) -> str:
    """``url`` without its password and query values (and, unless ``keep_path``, its path)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return HIDDEN
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port else "")
    if parts.username:
        netloc = f"{parts.username}{':' + HIDDEN if parts.password is not None else ''}@{netloc}"
    if not keep_path:
        return f"{parts.scheme}://{netloc}/{HIDDEN}" if parts.path.strip("/") or parts.query else \
            f"{parts.scheme}://{netloc}"
    query = "&".join(f"{k}={HIDDEN}" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def secret_parts(url: str) -> list[str]:
    """What of ``url`` is a secret: the whole URL, its password, its query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [url]
    if parts.password:
        found.append(parts.password)
    found += [v for _, v in parse_qsl(parts.query, keep_blank_values=False) if len(v) >= 4]
    return found


def mask_url(url: str, *, whole_path: bool = False) -> None:
    """Register ``url``'s secret parts with Airflow's secrets masker (no-op outside Airflow).

    ``whole_path``: the path is a credential too (webhooks), so mask it from the first segment.
    """
    values = secret_parts(url)
    if whole_path:
        path = urlsplit(url).path
        if len(path.strip("/")) >= 4:
            values.append(path)
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # the CI client runs without Airflow
        return
    for value in values:
        mask_secret(value)


def scrub(text: str, url: str, *, keep_path: bool = True) -> str:
    """``text`` with every secret part of ``url`` replaced (for a library's exception text)."""
    out = text.replace(url, redact_url(url, keep_path=keep_path))
    for value in sorted(secret_parts(url)[1:], key=len, reverse=True):
        out = out.replace(value, HIDDEN)
    if not keep_path:
        path = urlsplit(url).path
        if len(path.strip("/")) >= 4:
            out = out.replace(path, "/" + HIDDEN)
    return out
