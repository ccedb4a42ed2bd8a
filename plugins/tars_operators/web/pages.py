"""The base every Tars page is built on: escaped templates, fixed static files, strict headers.

A page is a Jinja2 template extending ``base.html.j2`` (autoescaping on, so any value the server
puts in it is text) plus a script file from ``static/`` that fills it through DOM nodes and
``textContent``, never ``innerHTML``. The Content-Security-Policy forbids inline script and style,
so a string that slips into the markup still cannot run; ``frame-ancestors 'self'`` lets Airflow's
UI (same origin) show the page in its iframe and nobody else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined

HERE = Path(__file__).resolve().parent

CSP = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "connect-src 'self'", "object-src 'none'", "base-uri 'none'", "form-action 'self'",
    "frame-ancestors 'self'",
])
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

_env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class StaticFile:
    file: str
    media_type: str


_JS = "text/javascript; charset=utf-8"
# The only files served: the URL picks a key, never a path.
STATIC: dict[str, StaticFile] = {
    "tars.css": StaticFile("tars.css", "text/css; charset=utf-8"),
    "tars.js": StaticFile("tars.js", _JS),
    "brake.js": StaticFile("brake.js", _JS),
    "apps.js": StaticFile("apps.js", _JS),
    "app.js": StaticFile("app.js", _JS),
    "run.js": StaticFile("run.js", _JS),
}


def render(template: str, *, base: str, **context: Any) -> HTMLResponse:
    """``template`` rendered with ``base`` (the Tars mount path, e.g. ``/tars``) and context."""
    html = _env.get_template(template).render(base=base, static=f"{base}/static", **context)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def static_response(name: str) -> Response:
    """One of the fixed static files; 404 for any other name."""
    entry = STATIC.get(name)
    if entry is None:
        raise HTTPException(404, f"no static file {name!r}")
    body = (HERE / "static" / entry.file).read_bytes()
    # no-cache: a browser revalidates, so an upgraded plugin's script is used at once.
    return Response(body, media_type=entry.media_type, headers={"Cache-Control": "no-cache"})


class SecurityHeaders:
    """ASGI middleware: every Tars response (page, static file, JSON, error) gets the headers."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
