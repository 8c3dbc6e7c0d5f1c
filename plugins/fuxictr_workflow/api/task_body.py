"""The body of POST /tasks: authorized before it is looked at, then validated off the event loop.

The order, and why:

1. Before the body is read, the caller must be allowed to run at least one workflow DAG;
   else 403 naming nothing. A caller without rights gets no validation message (those name
   configured servers, output databases, HDFS allowlists) and costs no parsing.
2. The body is decoded as JSON (cheap: guards.py caps it at ``api.max_body_bytes``) and only
   its ``server`` field is read: it decides which DAG the task runs in, so it is what the
   right to create is asked about (DAG-run create on that server's DAG; 403 naming it). A
   server that is not configured is asked about the same way (the DAG it would have), so a
   caller with rights on one DAG cannot tell unknown servers from other people's by the
   answer; a caller allowed on that name (an admin) gets 422 listing the servers it may use.
3. Only then are the fields validated: in a check process (field_checks.py: the SQL checks
   are CPU-bound Python; on the event loop, or in a thread holding the interpreter lock, they
   would stall every request of this API server), with one
   :class:`~fuxictr_workflow.domain.sql_budget.Budget` for both queries: tokens, nesting and
   ``API_SECONDS``. A query over budget is a 422 naming its field. If the check has not
   answered by the limit (it waited for a free process, or a step without a budget check ran
   long), the request is answered anyway.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from fuxictr_workflow.api import field_checks, security
from fuxictr_workflow.api.schemas import TaskCreateRequest
from fuxictr_workflow.domain import sql_budget
from fuxictr_workflow.domain.config import get_config

SERVER_MAX = 250  # Airflow's dag_id limit; no configured server is longer
# What a check may take beyond the budget's own deadline before the answer goes out anyway.
GRACE_S = 0.4

OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": TaskCreateRequest.model_json_schema()}},
    }
}


def invalid_body(errors: Iterable[Mapping[str, Any]]) -> RequestValidationError:
    """Validation errors of the body's fields, as FastAPI answers a request model's: 422."""
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors])


def _invalid(loc: tuple[str | int, ...], message: str, kind: str = "value_error") -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", *loc), "msg": message, "type": kind}])


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw else None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, bad UTF-8, absurd nesting
        raise _invalid((), f"is not valid JSON ({type(err).__name__})", "json_invalid") from None
    if not isinstance(data, dict):
        raise _invalid((), "must be a JSON object with the task's fields", "model_attributes_type")
    return data


def _authorized_server(data: dict[str, Any], user: Any) -> str:
    """The server the body names (or the default one), once the caller may run its DAG."""
    cfg = get_config()
    server = data.get("server")
    if server is None:
        assert cfg.default_server is not None
        server = cfg.default_server
    if not isinstance(server, str) or not server or len(server) > SERVER_MAX:
        raise _invalid(("server",), f"must be a training server's name (a string of at most {SERVER_MAX})")
    security.require(user, "POST", server)
    if server not in cfg.servers:
        yours = security.servers_with(user, "POST", cfg.servers)
        raise _invalid(
            ("server",), f"unknown training server {server!r}; yours: {', '.join(yours) or 'none'}"
        )
    return server


async def authorized_body(request: Request, user: Any) -> tuple[TaskCreateRequest, str]:
    """The validated body and its server, in the order the module docstring gives."""
    await run_in_threadpool(security.require_any, user, "POST", get_config().servers)
    data = _json_object(await request.body())
    server = await run_in_threadpool(_authorized_server, data, user)
    checked = await field_checks.checked(data, get_config(), sql_budget.API_SECONDS + GRACE_S)
    if checked is None:  # waited in the queue, or a step without a budget check ran long
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            [
                {
                    "loc": ["body", field],
                    "msg": f"the queries took more than {sql_budget.API_SECONDS:g} s to check; simplify them",
                    "type": "value_error",
                }
                for field in ("sample_sql", "infer_sql")
            ],
        )
    if checked.body is None:
        raise invalid_body(checked.errors)
    return checked.body, server
