"""The production engine's services (sandbox/engine.py): a real PostgreSQL 15 and Redis 7 on
loopback, reachable with what Airflow is given, and gone after ``stop``."""

from __future__ import annotations

import os
import pwd

import psycopg2
import pytest
import redis

from sandbox.engine import PG_USER, Engine, missing_binaries
from sandbox.procs import is_alive

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(missing_binaries()), reason=f"not installed: {missing_binaries()}"),
]


def test_postgres_and_redis_answer_and_stop_leaves_nothing_running() -> None:
    engine = Engine.start_new()
    try:
        pids = engine.pids()
        assert set(pids) == {"postgres", "redis"}
        with psycopg2.connect(host="127.0.0.1", port=engine.pg_port, user="airflow",
                              password=engine.password, dbname="airflow") as db:
            with db.cursor() as cur:
                cur.execute("SHOW server_version")
                assert cur.fetchone()[0].startswith("15.")
                cur.execute("SELECT current_user")
                assert cur.fetchone()[0] == "airflow"
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(host="127.0.0.1", port=engine.pg_port, user="airflow",
                             password="wrong", dbname="airflow").close()
        client = redis.Redis(host="127.0.0.1", port=engine.redis_port)
        assert client.ping()
        assert client.config_get("save") == {"save": ""}
        assert engine.broker_url == f"redis://127.0.0.1:{engine.redis_port}/0"
        if os.geteuid() == 0:  # postgres refuses root: it runs as the unprivileged account
            owner = pwd.getpwuid(os.stat(f"/proc/{pids['postgres']}").st_uid).pw_name
            assert owner == PG_USER
    finally:
        engine.stop()
    assert not any(is_alive(p) for p in pids.values()), pids
    assert not engine.base.exists()
