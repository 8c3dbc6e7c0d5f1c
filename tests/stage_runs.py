"""Running a stage operator the way Airflow does, outside Airflow: execute, and when it
defers, run its trigger (the real trigger code) to its first event and resume a fresh copy of
the operator with it, as a worker does after the triggerer fired."""

from __future__ import annotations

import asyncio
from typing import Any

TRIGGER_TIMEOUT_S = 900.0


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def run_stage(op: Any, context: dict[str, Any]) -> Any:
    from airflow.sdk.exceptions import TaskDeferred

    try:
        return op.execute(context)
    except TaskDeferred as deferred:
        payload = asyncio.run(asyncio.wait_for(_first_event(deferred.trigger), TRIGGER_TIMEOUT_S))
        resumed = type(op)(task_id=op.task_id)
        return getattr(resumed, deferred.method_name)(context, event=payload, **(deferred.kwargs or {}))


DAG_ID = "fuxictr_workflow"  # the default server's DAG


def bind_run(task_id: int, run_id: str, dag_id: str = DAG_ID) -> None:
    """Record (dag_id, run_id) as the task's run in the configured store, as the API does before
    it triggers a task's run: a run whose conf names a task works for it only then."""
    from fuxictr_workflow.workflow_log import get_logger

    get_logger().store.set_dag_run(task_id, dag_id, run_id)


def stage_context(task_id: int, airflow_task: str = "train") -> dict[str, Any]:
    """The parts of Airflow's task context the stage operators read, for a run the API started
    for the task (bound to it in the configured store)."""
    from types import SimpleNamespace

    run_id = f"manual__{task_id}"
    bind_run(task_id, run_id)
    return {
        "dag_run": SimpleNamespace(conf={"task_id": task_id}, run_id=run_id, dag_id=DAG_ID),
        "params": {},
        "ti": SimpleNamespace(try_number=1, dag_id=DAG_ID, run_id=run_id, task_id=airflow_task),
    }
