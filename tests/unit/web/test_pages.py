"""Tars pages on the plugin's real FastAPI app: escaped, no inline script, strict headers, fixed files.

Only Airflow's login is stood in for (a dependency override); the browser proof against the real
api-server is ``tests/e2e/test_browser_brake.py``.
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tars_operators.web.pages import CSP, STATIC

pytestmark = pytest.mark.unit

HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'



def assert_strict_headers(r) -> None:  # type: ignore[no-untyped-def]
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "same-origin"


def test_csp_allows_no_inline_code_and_same_origin_framing_only() -> None:
    rules = dict(rule.split(" ", 1) for rule in CSP.split("; "))
    assert rules["script-src"] == "'self'" and rules["style-src"] == "'self'"
    assert rules["frame-ancestors"] == "'self'" and rules["object-src"] == "'none'"
    assert "unsafe" not in CSP


def test_brake_page_has_no_inline_script_or_style_and_links_files_under_the_mount(
        client: TestClient) -> None:
    r = client.get("/ui")
    assert r.status_code == 200
    assert_strict_headers(r)
    html = r.text
    assert re.findall(r"<script[^>]*>", html) == [
        '<script type="module" src="/tars/static/brake.js">']
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html), "inline event handler in the page"
    assert '<link rel="stylesheet" href="/tars/static/tars.css">' in html
    assert 'data-base="/tars"' in html


def test_app_from_the_url_is_escaped_into_the_page(client: TestClient) -> None:
    r = client.get("/ui", params={"app": HOSTILE})
    assert r.status_code == 200
    assert "<script>alert" not in r.text and "<img" not in r.text
    assert ('value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x '
            'onerror=alert(2)&gt;"') in r.text


@pytest.mark.parametrize("name", sorted(STATIC))
def test_every_static_file_is_served_with_its_type_and_the_headers(
        client: TestClient, name: str) -> None:
    r = client.get(f"/static/{name}")
    assert r.status_code == 200 and r.content
    assert_strict_headers(r)
    kind = "text/css" if name.endswith(".css") else "text/javascript"
    assert r.headers["content-type"] == f"{kind}; charset=utf-8"


@pytest.mark.parametrize("name", [
    "api.py", "..%2Fapi.py", "..%2F..%2Fapi.py", "%2Fetc%2Fpasswd", "tars.css%00", "TARS.CSS",
    "templates%2Fbase.html.j2", ".", "..",
])
def test_no_other_file_is_served(client: TestClient, name: str) -> None:
    r = client.get(f"/static/{name}")
    assert r.status_code == 404, f"/static/{name} answered {r.status_code}: {r.text[:80]}"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_scripts_never_write_html(client: TestClient) -> None:
    for name in STATIC:
        if name.endswith(".js"):
            text = client.get(f"/static/{name}").text
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                         "eval(", "new Function"):
                assert sink not in text, f"{name} uses {sink}"
