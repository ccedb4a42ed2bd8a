"""The Apps and App view pages on the plugin's real FastAPI app: escaped, no inline code.

Only Airflow's login is stood in for; their data routes and the browser proof are in
``tests/e2e/test_browser_views.py``.
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tars_operators.web.views import app_from_dag_id

pytestmark = pytest.mark.unit

HOSTILE = '"><script>alert(1)</script>'



@pytest.mark.parametrize("path, script", [("/views/apps", "apps.js"),
                                          ("/views/app?app=demo", "app.js")])
def test_view_pages_load_only_their_script_file(client: TestClient, path: str, script: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert re.findall(r"<script[^>]*>", r.text) == [
        f'<script type="module" src="/tars/static/{script}">']
    assert "<style" not in r.text and " style=" not in r.text
    assert not re.search(r"\son[a-z]+=", r.text)


def test_the_dag_tab_names_the_app_of_its_dag(client: TestClient) -> None:
    r = client.get("/views/app", params={"dag_id": "tars_deploy__demo"})
    assert 'data-app="demo"' in r.text and "<h1 id=\"title\" data-app=\"demo\">demo</h1>" in r.text
    other = client.get("/views/app", params={"dag_id": "example_bash_operator"})
    assert 'data-app=""' in other.text and "Not a Tars app" in other.text


def test_app_name_from_the_url_is_escaped(client: TestClient) -> None:
    r = client.get("/views/app", params={"app": HOSTILE})
    assert "<script>alert" not in r.text
    assert "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in r.text


@pytest.mark.parametrize("dag_id, app_name", [
    ("tars_deploy__demo", "demo"), ("tars_canary__web_2", "web_2"),
    ("tars_rollback__demo", "demo"), ("demo", ""), ("xtars_deploy__demo", ""),
])
def test_app_from_dag_id(dag_id: str, app_name: str) -> None:
    assert app_from_dag_id(dag_id) == app_name


def test_the_release_tab_names_its_run_escaped(client: TestClient) -> None:
    r = client.get("/views/run", params={"dag_id": "tars_deploy__demo", "run_id": HOSTILE})
    assert re.findall(r"<script[^>]*>", r.text) == ['<script type="module" src="/tars/static/run.js">']
    assert 'data-app="demo" data-dag="tars_deploy__demo"' in r.text
    assert "<script>alert" not in r.text and "data-run=\"&#34;&gt;&lt;script&gt;" in r.text
    other = client.get("/views/run", params={"dag_id": "etl", "run_id": "x"})
    assert 'data-app=""' in other.text and "Not a Tars run" in other.text
