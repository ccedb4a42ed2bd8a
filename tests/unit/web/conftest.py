"""The Tars FastAPI app with only Airflow's login stood in (a logged-in admin)."""

from __future__ import annotations

from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from airflow.api_fastapi.core_api.security import get_user
from tars_operators.api import app


class User:
    def get_name(self) -> str:
        return "admin"


@pytest.fixture
def client() -> Iterator[TestClient]:
    app.dependency_overrides[get_user] = User
    try:
        # Mounted under /tars in the api-server: pages link their files from the mount path.
        yield TestClient(app, root_path="/tars")
    finally:
        app.dependency_overrides.pop(get_user, None)
