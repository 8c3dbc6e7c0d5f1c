"""The quality gate's decision route: a held task approved or rejected by the caller.

The answer goes to Airflow's own human-in-the-loop route as the caller (airflow_api.py):
Airflow checks their permission on the DAG (and the gate's assigned users, if any), records
who answered, writes its audit log and resumes the gate. Only
once Airflow has accepted it is the answer recorded in the store, where the gate's retry finds
it should Airflow lose the resume (Airflow 3.3.2 fails a task instance answered in the seconds
before the scheduler saw it park, as a "state mismatch"; its retry must not ask again).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from fastapi import APIRouter, HTTPException, Request, status
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from fuxictr_workflow.api import security, tasks
from fuxictr_workflow.api.airflow_api import AirflowApi, AirflowRefused
from fuxictr_workflow.api.schemas import GateDecisionRequest, QualityGate
from fuxictr_workflow.api.task_body import invalid_body
from fuxictr_workflow.domain.quality_gate import Decision
from fuxictr_workflow.store import get_store

router = APIRouter(prefix="/tasks", tags=["Tasks"])

# a decision in the body: the option Airflow's approval task is answered with, and the store's record
ANSWERS = {
    "approve": (ApprovalOperator.APPROVE, Decision.APPROVED),
    "reject": (ApprovalOperator.REJECT, Decision.REJECTED),
}


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
        raise invalid_body(err.errors(include_url=False)) from None
    gate = await run_in_threadpool(tasks.gate_of, store, task)
    if gate is None or gate.get("answer") is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"task {task_id} is not waiting for a quality-gate decision"
        )
    option, decision = ANSWERS[body.decision]
    try:
        with AirflowApi(request) as api:
            answered = await run_in_threadpool(api.answer_hitl, gate["answer"], option)
    except AirflowRefused as err:
        raise HTTPException(err.status_code, f"Airflow refused the decision: {err.detail}") from None
    responder = answered.get("responded_by") or {}
    await run_in_threadpool(
        store.quality_gates.record_answer, task_id, decision, responder.get("name") or responder.get("id")
    )
    return await run_in_threadpool(tasks.gate_of, store, task) or gate
