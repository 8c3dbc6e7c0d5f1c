"""The seed's task routes (create, list, get) plus additive retry and cancel."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from starlette.concurrency import run_in_threadpool

from fuxictr_workflow.api import security, task_body, trigger
from fuxictr_workflow.api.airflow_api import AirflowApi, AirflowRefused
from fuxictr_workflow.api.schemas import Task, TaskCreated, TaskCreateRequest, TaskDetail
from fuxictr_workflow.domain.config import get_config
from fuxictr_workflow.domain.quality_gate import Decision
from fuxictr_workflow.domain.stages import RETRYABLE_TASK_STATUSES, STAGE_NAMES, Stage, TaskStatus
from fuxictr_workflow.domain.task_fields import TASK_FIELDS
from fuxictr_workflow.orchestration.dag_params import GATE_TASK, dag_id_for
from fuxictr_workflow.ssh import cancel_jobs
from fuxictr_workflow.store import IllegalTransition, NotFound, WorkflowStore, get_store, iso, utcnow
from fuxictr_workflow.workflow_log import get_logger

router = APIRouter(prefix="/tasks", tags=["Tasks"])


def _task(row: dict[str, Any], stale_after: timedelta) -> dict[str, Any]:
    out = {k: row.get(k) for k in Task.model_fields if k != "stale"}
    for key in ("created_at", "updated_at", "completed_at"):
        out[key] = iso(row.get(key))
    out["stale"] = bool(
        row["status"] == TaskStatus.RUNNING
        and row.get("updated_at")
        and utcnow() - row["updated_at"] > stale_after
    )
    return out


def _detail(store: WorkflowStore, row: dict[str, Any], stale_after: timedelta) -> dict[str, Any]:
    out = _task(row, stale_after)
    out["steps"] = [
        {
            "step_name": s["step_name"],
            "status": s["status"],
            "started_at": iso(s["started_at"]),
            "completed_at": iso(s["completed_at"]),
            "error_message": s["error_message"],
            "retry_count": s["retry_count"] or 0,
            "result": json.loads(s["result"]) if s.get("result") else None,
        }
        for s in row["steps"]
    ]
    out["transfer"] = store.chunk_progress(row["id"])
    out["epochs"] = [asdict(e) for e in store.epochs(row["id"], Stage.TRAIN)]
    out["quality_gate"] = gate_of(store, row)
    return out


def gate_of(store: WorkflowStore, row: dict[str, Any]) -> dict[str, Any] | None:
    """The task's quality-gate review as the API shows it, with where to answer while it waits."""
    gate = store.gate(row["id"])
    if gate is None:
        return None
    out = {**gate, "updated_at": iso(gate["updated_at"])}
    if gate["decision"] == Decision.WAITING and row["status"] == TaskStatus.WAITING and row["dag_run_id"]:
        out["answer"] = {
            "dag_id": _run_dag_id(row),
            "dag_run_id": row["dag_run_id"],
            "task_id": GATE_TASK,
            "map_index": -1,
        }
    return out


def _stale_after() -> timedelta:
    return timedelta(seconds=3 * get_config().task.heartbeat_interval)


def _start_run(store: WorkflowStore, task_id: int, attempt: int, api: AirflowApi) -> str:
    """Trigger the task's DAG run; a failed trigger fails the task with the reason.

    The run is recorded as the task's run before it is triggered: the run's stages work for
    the task only if that record names their (dag_id, run_id) (operators/base.py), and the
    scheduler may start them before this function returns. A run id that turns out taken is
    replaced by a fresh one, recorded again, and never reused."""
    cfg = get_config()
    task = store.get_task(task_id, with_steps=False)
    server = task["server"] or cfg.default_server
    conf = {"task_id": task_id, "server": server, **{f: task[f] for f in TASK_FIELDS}}
    if attempt:
        conf["resume"] = True
    dag_id = dag_id_for(server, cfg.default_server)
    for tries_left in range(trigger.RUN_ID_TRIES - 1, -1, -1):
        run_id = trigger.run_id_for(task_id, attempt)
        store.set_dag_run(task_id, dag_id, run_id, attempt)
        try:
            return trigger.trigger(api, dag_id, run_id, conf)
        except trigger.RunIdTaken as err:
            if tries_left:
                continue
            failure: Exception = err
        except trigger.TriggerError as err:
            failure = err
        except Exception as err:  # the server logs the traceback; the task stays retryable
            store.fail_task(task_id, f"could not trigger DAG {dag_id}: {err}")
            raise
        # no run of ours has that id: the record must not bind the task to a run someone else
        # creates (or created) with it, and a retry then starts a run of its own
        store.clear_dag_run(task_id)
        store.fail_task(task_id, str(failure))
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"task {task_id} failed to start: {failure}"
        ) from failure
    raise AssertionError("unreachable")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskCreated,
    summary="Create a task and trigger its pipeline run",
    openapi_extra=task_body.OPENAPI,
)
async def create_task(request: Request, user: security.CurrentUser) -> dict[str, Any]:
    """Authorized before the body is validated, which happens off the event loop (task_body.py)."""
    body, server = await task_body.authorized_body(request, user)
    return await run_in_threadpool(_create_task, body, server, request)


def _create_task(body: TaskCreateRequest, server: str, request: Request) -> dict[str, Any]:
    store = get_store()
    task_id = store.create_task(**body.model_dump(exclude={"server"}), server=server)
    with AirflowApi(request) as api:
        _start_run(store, task_id, 0, api)
    return {"task_id": task_id, "status": TaskStatus.PENDING}


@router.get("", response_model=list[Task], summary="List tasks of the DAGs you may read, newest first")
def list_tasks(
    user: security.CurrentUser,
    status_: Annotated[str | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
    dag_run_id: str | None = None,
    dag_id: str | None = None,
) -> list[dict[str, Any]]:
    store = get_store()
    stale_after = _stale_after()
    if dag_run_id is not None:
        # a run id is unique only within one DAG: every readable task with that run id (in
        # `dag_id`'s run only, when given)
        rows = store.tasks_with_run_id(dag_run_id)
        return [
            _task(r, stale_after)
            for r in rows
            if status_ in (None, r["status"])
            and dag_id in (None, _run_dag_id(r))
            and security.is_authorized(user, "GET", security.server_dag_id(r["server"]))
        ][offset : offset + limit]
    servers, unassigned = security.readable_task_servers(user, store.task_servers())
    rows = store.list_tasks(
        status=status_, limit=limit, offset=offset, servers=servers, unassigned=unassigned
    )
    return [_task(r, stale_after) for r in rows]


@router.get(
    "/{task_id}",
    response_model=TaskDetail,
    summary="One task with its steps",
)
def get_task(task_id: int, user: security.CurrentUser) -> dict[str, Any]:
    store = get_store()
    task = existing(store, task_id)
    security.require(user, "GET", task["server"])
    return _detail(store, store.get_task(task_id), _stale_after())


def existing(store: WorkflowStore, task_id: int) -> dict[str, Any]:
    try:
        return store.get_task(task_id, with_steps=False)
    except NotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"task {task_id} does not exist") from None


def _run_dag_id(task: dict[str, Any]) -> str:
    """The DAG of the task's current run (recorded with it; older rows: the server's DAG)."""
    cfg = get_config()
    return str(task.get("dag_id") or dag_id_for(task["server"] or cfg.default_server, cfg.default_server))


@router.post(
    "/{task_id}/retry",
    response_model=TaskCreated,
    summary="Resume a failed, cancelled or rejected task from its first unfinished stage",
)
def retry_task(task_id: int, user: security.CurrentUser, request: Request) -> dict[str, Any]:
    """The task's own DAG run is cleared from the first unfinished stage on (Airflow's clear)
    and re-queued, so completed stages are not redone and verified chunks are not re-sent.
    Only when that run is gone from Airflow does a new run ``..._retry_<n>`` start."""
    store = get_store()
    task = existing(store, task_id)
    security.require(user, "POST", task["server"])
    with AirflowApi(request) as api:
        _resume(store, task, api)
    return {"task_id": task_id, "status": TaskStatus.PENDING}


def _resume(store: WorkflowStore, task: dict[str, Any], api: AirflowApi) -> None:
    """Clear the task's run from its first unfinished stage once it has settled; a new run
    when Airflow no longer has it (or it never had one)."""
    task_id, previous, dag_id = task["id"], task["dag_run_id"] or "", _run_dag_id(task)
    if (
        task["status"] in RETRYABLE_TASK_STATUSES
        and previous
        and not trigger.wait_until_settled(api, dag_id, previous)
    ):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"task {task_id}: its DAG run {previous} is still running in Airflow; retry once it has ended",
        )
    try:
        first = store.reset_from_step(task_id)
    except NotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"task {task_id} does not exist") from None
    except IllegalTransition as err:
        raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from None
    stages = STAGE_NAMES[STAGE_NAMES.index(first) :]
    try:
        cleared = bool(previous) and trigger.clear_from(api, dag_id, previous, stages) > 0
    except Exception as err:  # the run could not be cleared: say why, keep it retryable
        store.fail_task(task_id, f"retry could not clear run {previous}: {err}")
        code = err.status_code if isinstance(err, AirflowRefused) and err.status_code == 403 else 503
        raise HTTPException(code, f"task {task_id} could not be retried: {err}") from err
    if not cleared:
        _start_run(store, task_id, task["run_attempt"] + 1 if previous else 0, api)


@router.post(
    "/{task_id}/cancel",
    response_model=TaskCreated,
    summary="Cancel a pending or running task and stop its run",
)
def cancel_task(task_id: int, user: security.CurrentUser, request: Request) -> dict[str, Any]:
    store = get_store()
    security.require(user, "PUT", existing(store, task_id)["server"])
    try:
        store.cancel_task(task_id)
    except NotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"task {task_id} does not exist") from None
    except IllegalTransition as err:
        raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from None
    task = store.get_task(task_id)
    # Failing the run in Airflow stops its jobs: Airflow's run-failed listener hook
    # (orchestration/listeners.py) fires in this server and stops them in the background. A task
    # whose run Airflow no longer has (or never got) has its jobs stopped here.
    failed_in_airflow = False
    try:
        failed_in_airflow = bool(task["dag_run_id"]) and _fail_run(
            request, _run_dag_id(task), task["dag_run_id"]
        )
    finally:
        if not failed_in_airflow:  # Airflow has no run for it, or refused to fail it
            _stop_jobs_in_background(task)
    return {"task_id": task_id, "status": TaskStatus.CANCELLED}


def _stop_jobs_in_background(task: dict[str, Any]) -> None:
    """In the background: an unreachable server would hold the answer for SSHHook's whole
    connection retry; the cancel is recorded already, and the task's log says how the stop went."""
    threading.Thread(
        target=cancel_jobs.stop_jobs_of,
        args=(get_config(), task, get_logger(), "cancel"),
        name=f"cancel-jobs-{task['id']}",
        daemon=True,
    ).start()


def _fail_run(request: Request, dag_id: str, run_id: str) -> bool:
    """The cancelled task's run failed in Airflow (running task instances fail, pending ones
    are skipped), as the caller. False when Airflow no longer has the run."""
    try:
        with AirflowApi(request) as api:
            api.fail_run(dag_id, run_id)
    except AirflowRefused as err:
        if err.status_code == status.HTTP_404_NOT_FOUND:
            return False
        raise HTTPException(
            status.HTTP_502_BAD_GATEWAY,
            f"the task is cancelled, but Airflow did not stop run {run_id}: {err}",
        ) from err
    return True
