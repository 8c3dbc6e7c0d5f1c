"""When Airflow, not a stage's own code, ends a stage: what happens to its job and its step.

A user acts on a train/infer task instance in Airflow (mark failed or succeeded, clear), or
the DAG run fails while a stage was running (a task instance marked failed before its
trigger was picked up, a task process lost on its last try). The stage's code never sees
its end in these cases, so the step would stay "running" and the job would go on training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.domain.stages import FINAL_TASK_STATUSES, StepStatus, TaskStatus
from fuxictr_workflow.store import IllegalTransition
from fuxictr_workflow.workflow_log import WorkflowLogger

# task instance states after which nothing will follow the job again
ENDED_TI_STATES = ("failed", "success", "skipped", "upstream_failed", "removed")
CANCELLED = "cancelled"


def ti_state(ti_ref: tuple[str, str, str]) -> str | None:
    """The task instance's state, as Airflow has it now."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    dag_id, run_id, task_id = ti_ref
    states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, task_ids=[task_id], run_ids=[run_id])
    return (states.get(run_id) or {}).get(task_id)


def why_job_stops(
    logger: WorkflowLogger, ti_ref: tuple[str, str, str] | None, workflow_task_id: int
) -> str | None:
    """Why Airflow stopping a train/infer task instance means stopping its job: "cancelled"
    when the workflow task was cancelled, else the task instance's ended state (a user marked
    it); None when it was cleared (its next try finds the job running and follows it)."""
    if logger.store.get_task(workflow_task_id, with_steps=False)["status"] == TaskStatus.CANCELLED:
        return CANCELLED
    if ti_ref is None:
        return CANCELLED
    state = ti_state(ti_ref)
    return state if state in ENDED_TI_STATES else None


def announce_stop(logger: WorkflowLogger, workflow_task_id: int, step: str, why: str) -> None:
    """Say that the job of a task instance a user marked ended is being stopped, before stopping
    it: Airflow SIGKILLs a task process 5 s after its SIGTERM, and on a loaded machine connecting
    to the server and stopping the job can take longer. The DAG's failure callback then
    finishes the stop, and the log still tells what set it off."""
    if why != CANCELLED:  # cancel_task logged the cancel already
        logger.info(
            workflow_task_id,
            step,
            f"{step} was marked {why} in Airflow; stopping its job on the training server",
        )


def close_step_marked(
    logger: WorkflowLogger, workflow_task_id: int, step: str, why: str, stopped: bool
) -> None:
    """Close the step of a task instance a user marked ended in Airflow, after stopping its
    job (`stopped` says whether that worked). Marked failed: the step fails as cancelled (the
    task fails with it, so clearing the task instance in Airflow runs the stage again). Any
    other mark is only logged: the pipeline run goes on as Airflow decides."""
    if why == CANCELLED:
        return  # cancel_task closed the step already
    job = (
        "its job on the training server was stopped"
        if stopped
        else "its job on the training server could not be stopped (see the task's log)"
    )
    logger.warning(workflow_task_id, step, f"{step} was marked {why} in Airflow; {job}")
    if why != "failed":
        return
    if _step_status(logger, workflow_task_id, step) != StepStatus.RUNNING:
        return  # the stage's own code closed it first
    with contextlib.suppress(IllegalTransition):  # ... or between the check and this write
        logger.store.fail_step(
            workflow_task_id, step, f"cancelled: {step} was marked failed in Airflow; {job}"
        )


def close_steps_of_failed_run(
    cfg: WorkflowConfig,
    logger: WorkflowLogger,
    dag_id: str,
    run_id: str,
    resumed: Callable[[], bool] = lambda: False,
) -> None:
    """The DAG run (dag_id, run_id) failed: if the workflow task bound to that run still shows
    a running step, that stage's end was never recorded. Stop the task's jobs and fail those
    steps, so the task does not show "running" forever and no training goes on for it.

    Only the task bound to this very run: a run of another server's DAG may have the same id
    (whoever triggers a run picks its id), and its failure must not touch this task. And only
    while the run stays failed: the callback can run seconds late, after a user has cleared the
    run and a new try has started the step (`resumed` says whether Airflow runs it again). A try
    that starts the step after that check takes a new attempt, which the write below leaves
    alone (the store's compare-and-set on the step's attempt)."""
    from fuxictr_workflow.orchestration.dag_params import server_of_dag
    from fuxictr_workflow.ssh.cancel_jobs import stop_jobs_of

    store = logger.store
    task_id = store.find_task_by_run(dag_id, run_id, server_of_dag(dag_id, cfg.servers, cfg.default_server))
    if task_id is None:
        return
    task = store.get_task(task_id)
    if task["status"] in FINAL_TASK_STATUSES:
        return
    if task["status"] == TaskStatus.WAITING:  # held by the quality gate: no step, no job runs
        if not resumed():
            store.fail_task(
                task_id,
                f"the DAG run {run_id} failed while the quality gate waited for a decision (no "
                "decision came within quality_gate.decision_timeout_h, or the gate was marked failed "
                "in Airflow); nothing was published",
            )
        return
    running = {s["step_name"]: s["retry_count"] for s in task["steps"] if s["status"] == StepStatus.RUNNING}
    if not running or resumed():
        return
    stop_jobs_of(cfg, task, logger, why="the DAG run failed")
    for step, attempt in running.items():
        # the stage's own on_kill may have closed the step while the jobs were being stopped,
        # or a new try of the cleared run started it again (IllegalTransition, StaleAttempt)
        with contextlib.suppress(IllegalTransition):
            store.fail_step(
                task_id,
                step,
                f"the DAG run {run_id} failed while {step} was running (its task instance was marked "
                "failed, or its process was lost on its last try); its job on the training server was stopped",
                attempt=attempt,
            )


def taken_up_again(ti_states: Iterable[str | None]) -> bool:
    """Whether a failed run runs again, from its task instances' states: some is no longer
    ended (a user cleared it, and with it the run)."""
    return any(state not in ENDED_TI_STATES for state in ti_states)


def run_resumed(dag_id: str, run_id: str) -> bool:
    """:func:`taken_up_again` for the run, as Airflow has it now."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=[run_id]).get(run_id) or {}
    return taken_up_again(states.values())


def _step_status(logger: WorkflowLogger, workflow_task_id: int, step: str) -> str:
    steps = logger.store.get_task(workflow_task_id)["steps"]
    return next(s["status"] for s in steps if s["step_name"] == step)


def on_dag_run_failed(context: Any) -> None:
    """The pipeline DAG's on_failure_callback (Airflow runs it in the dag-processor)."""
    from fuxictr_workflow.domain.config import get_config
    from fuxictr_workflow.workflow_log import get_logger

    dag_id, run_id = context["dag_run"].dag_id, context["dag_run"].run_id
    close_steps_of_failed_run(
        get_config(), get_logger(), dag_id, run_id, resumed=lambda: run_resumed(dag_id, run_id)
    )
