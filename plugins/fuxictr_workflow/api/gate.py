"""The quality gate's decision route: a held task approved or rejected by the caller.

The answer goes to Airflow's own human-in-the-loop route on this same server, as the caller
(their bearer token or UI cookie): Airflow checks their permission on the DAG (and the gate's
assigned users, if any), records who answered, writes its audit log and resumes the gate. Only
once Airflow has accepted it is the answer recorded in the store, where the gate's retry finds
it should Airflow lose the resume (Airflow 3.3.2 fails a task instance answered in the seconds
before the scheduler saw it park, as a "state mismatch"; its retry must not ask again).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from airflow.providers.standard.operators.hitl import ApprovalOperator
from fastapi import APIRouter, HTTPException, Request, status
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from fuxictr_workflow.api import URL_PREFIX, security, tasks
from fuxictr_workflow.api.schemas import GateDecisionRequest, QualityGate
from fuxictr_workflow.quality_gate import Decision
from fuxictr_workflow.store import get_store

router = APIRouter(prefix="/tasks", tags=["Tasks"])

OPTIONS = {"approve": ApprovalOperator.APPROVE, "reject": ApprovalOperator.REJECT}
AIRFLOW_TIMEOUT_S = 60


def _airflow_root(request: Request) -> str:
    """This API server as its socket listens (not whatever host a proxy put in front of it),
    with the base path Airflow is served under."""
    host, port = request.scope["server"]
    base = request.scope.get("root_path", "").removesuffix(URL_PREFIX)
    return f"http://{host}:{port}{base}"


def _credentials(request: Request) -> dict[str, str]:
    if "authorization" in request.headers:
        return {"Authorization": request.headers["authorization"]}
    token = request.cookies.get("_token")
    return {"Cookie": f"_token={token}"} if token else {}


@router.post(
    "/{task_id}/quality-gate",
    response_model=QualityGate,
    summary="Approve or reject a task the quality gate holds",
    responses={
        403: {"description": "not allowed on the task's DAG (here, or by Airflow's HITL check)"},
        404: {"description": "no such task"},
        409: {"description": "the task is not waiting for a decision, or it was answered already"},
        422: {"description": 'the body is not {"decision": "approve" | "reject"}'},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": GateDecisionRequest.model_json_schema()}},
        }
    },
)
async def decide(task_id: int, request: Request, user: security.CurrentUser) -> dict[str, Any]:
    """Authorized (edit rights on the task's DAG) before the body is read."""
    store = get_store()
    task = await run_in_threadpool(tasks.existing, store, task_id)
    security.require(user, "PUT", task["server"])
    try:
        body = GateDecisionRequest.model_validate_json(await request.body())
    except ValidationError as err:
        from fastapi.exceptions import RequestValidationError

        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False)]
        ) from None
    detail = await run_in_threadpool(store.get_task, task_id)
    gate = tasks.gate_of(store, detail)
    if gate is None or gate.get("answer") is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"task {task_id} is not waiting for a quality-gate decision"
        )
    answer = gate["answer"]
    path = (
        f"/api/v2/dags/{quote(answer['dag_id'], safe='')}/dagRuns/{quote(answer['dag_run_id'], safe='')}"
        f"/taskInstances/{quote(answer['task_id'], safe='')}/{answer['map_index']}/hitlDetails"
    )
    payload = {"chosen_options": [OPTIONS[body.decision]], "params_input": {}}
    async with httpx.AsyncClient(base_url=_airflow_root(request), timeout=AIRFLOW_TIMEOUT_S) as client:
        resp = await client.patch(path, json=payload, headers=_credentials(request))
    if resp.status_code >= 400:
        try:
            reason = resp.json().get("detail")
        except ValueError:
            reason = resp.text
        raise HTTPException(resp.status_code, f"Airflow refused the decision: {reason}")
    responder = resp.json().get("responded_by") or {}
    decision = Decision.APPROVED if body.decision == "approve" else Decision.REJECTED
    await run_in_threadpool(
        store.quality_gates.record_answer, task_id, decision, responder.get("name") or responder.get("id")
    )
    return tasks.gate_of(store, await run_in_threadpool(store.get_task, task_id)) or gate
