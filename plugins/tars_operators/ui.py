"""The brake page in the Airflow UI (nav "Tars brake"): pull, release, see the audit trail.

Served by the plugin's FastAPI app; the browser's Airflow session cookie authenticates the page,
its static files and the calls its script makes to the brake routes (which check the user may
edit the app's runs). Built on ``web.pages``: escaped template, script file, strict headers.
"""

from __future__ import annotations

from fastapi.responses import HTMLResponse

from tars_operators.web.pages import render


def page(base: str, app: str = "") -> HTMLResponse:
    """The brake page under mount path ``base``; ``app`` (any text, escaped) is shown first."""
    return render("brake.html.j2", base=base, app=app)
