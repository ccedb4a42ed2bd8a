"""An api-server middleware: a trigger of a Tars DAG whose conf the form does not know is refused.

``POST /api/v2/dags/tars_*/dagRuns`` (the REST API and the UI's Trigger button both use it)
answers 400 with the unknown and the known keys when ``conf`` has a key outside the DAG's
Params (``{"dryrun": true}`` used to run a real release) or a malformed version — before a
run exists. Airflow itself ignores unknown conf keys. Registered by the plugin
(``fastapi_root_middlewares``); ``prepare`` applies the same rule to runs made any other way.

Pure ASGI (no ``BaseHTTPMiddleware``): every other request passes with one string check, and
the body read here is replayed unchanged to Airflow's handler.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tars_operators.errors import PlanError
from tars_operators.plan.conf import check_run_conf

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# (scope, dag_id) → the DAG's param names, or None to let Airflow answer (no DAG, no access).
KnownKeys = Callable[[Scope, str], Awaitable[list[str] | None]]

TRIGGER = re.compile(r"(?:/.*)?/api/v2/dags/(tars_[A-Za-z0-9_.-]+)/dagRuns/?")
MAX_BODY = 1 << 20  # a bigger body is left to Airflow (and to prepare's check)


class RunConfGuard:
    """Refuses (400) a trigger of a ``tars_*`` DAG with conf keys outside its form."""

    def __init__(self, app: ASGIApp, known_keys: KnownKeys | None = None):
        self.app = app
        self.known_keys = known_keys or dag_param_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (TRIGGER.fullmatch(scope.get("path", ""))
                 if scope["type"] == "http" and scope.get("method") == "POST" else None)
        if match is None:
            await self.app(scope, receive, send)
            return
        messages, body = await _read_body(receive)
        refusal = await self._refusal(scope, match.group(1), body)
        if refusal is None:
            await self.app(scope, _replay(messages, receive), send)
        else:
            await _answer(send, 400, {"detail": refusal})

    async def _refusal(self, scope: Scope, dag_id: str, body: bytes | None) -> str | None:
        conf = _conf(body)
        if not conf:
            return None
        known = await self.known_keys(scope, dag_id)
        if known is None:
            return None
        try:
            check_run_conf(conf, known, dag_id)
        except PlanError as exc:
            return str(exc)
        return None


def _conf(body: bytes | None) -> dict[str, Any] | None:
    """The ``conf`` object of a trigger body; None when absent or malformed (Airflow says why)."""
    if not body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    conf = data.get("conf") if isinstance(data, dict) else None
    return conf if isinstance(conf, dict) else None


async def _read_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """Every message up to the end of the body, and the body (None when too big or cut off)."""
    messages: list[Message] = []
    size, complete = 0, False
    while not complete:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        size += len(message.get("body", b""))
        if size > MAX_BODY:
            return messages, None
        complete = not message.get("more_body", False)
    return messages, b"".join(m.get("body", b"") for m in messages)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives back what was read, then continues with the real one."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


async def _answer(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---- the Airflow side: who is asking, may they trigger, what the DAG's form holds ----------


async def dag_param_keys(scope: Scope, dag_id: str) -> list[str] | None:
    """The param names of ``dag_id`` for a caller allowed to trigger it; None otherwise.

    Unauthenticated or unauthorised callers get Airflow's own 401/403, not the form's keys.
    """
    from starlette.concurrency import run_in_threadpool

    user = await _caller(scope)
    if user is None:
        return None
    return await run_in_threadpool(_allowed_keys, scope.get("app"), dag_id, user)


async def _caller(scope: Scope) -> Any:
    from fastapi import HTTPException
    from starlette.requests import Request

    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    request = Request(scope)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        token = request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")
    try:
        return await resolve_user_from_token(token.strip() or None)
    except HTTPException:
        return None


def _allowed_keys(app: Any, dag_id: str, user: Any) -> list[str] | None:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )
    from airflow.api_fastapi.common.dagbag import create_dag_bag
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    details = DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id))
    if not get_auth_manager().is_authorized_dag(
        method="POST", access_entity=DagAccessEntity.RUN, details=details, user=user
    ):
        return None
    dag_bag = getattr(getattr(app, "state", None), "dag_bag", None) or create_dag_bag()
    with create_session() as session:
        dag = dag_bag.get_latest_version_of_dag(dag_id, session=session)
    return list(dag.params.keys()) if dag is not None else None
