"""When Airflow, not a stage's own code, ends a stage: what happens to its job and its step.

A user marks a stage's task instance in Airflow (failed, success or skipped), or the whole
run (success, failed; the plugin's cancel marks it failed), or the run fails while a stage was
running (a task process lost on its last try). The stage's code never sees its end in these
cases, so the step would stay "running" and a job would go on training. Airflow's listener
hooks (listeners.py) call :func:`follow_mark`, :func:`run_failed` and :func:`run_succeeded`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.domain.stages import FINAL_TASK_STATUSES, JOB_STEPS, STAGE_NAMES, StepStatus, TaskStatus
from fuxictr_workflow.store import IllegalTransition, WorkflowStore
from fuxictr_workflow.workflow_log import WorkflowLogger

# task instance states after which nothing will follow the job again
ENDED_TI_STATES = ("failed", "success", "skipped", "upstream_failed", "removed")
CANCELLED = "cancelled"
# (dag_id, run_id) -> the run's state and its task instances' states, as Airflow has them
ReadStates = Callable[[str, str], tuple[str | None, list[str | None]]]
# how long the run's end may take to be committed (see _reads_as)
STATE_VISIBLE_WAIT_S = 30.0


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
    it: connecting to the server and stopping the job can take a while, and the log then
    already tells what set it off."""
    if why != CANCELLED:  # cancel_task logged the cancel already
        logger.info(
            workflow_task_id,
            step,
            f"{step} was marked {why} in Airflow; stopping its job on the training server",
        )


def record_mark(
    logger: WorkflowLogger, workflow_task_id: int, step: str, why: str, stopped: bool | None
) -> None:
    """Record what a user's mark in Airflow means for a stage's step, after its job was stopped
    (`stopped` says whether that worked; None when this caller stopped no job: a stage without
    one, or a job its worker's own task process stops).

    Marked failed: a running step fails as cancelled (the task fails with it, so clearing the
    task instance in Airflow runs the stage again). Marked success or skipped: Airflow counts the
    stage done and goes on to the next, so the step, unless it completed, is skipped with the
    mark as its reason; left running, it would keep the task running after its last stage."""
    if why == CANCELLED:
        return  # cancel_task closed the step already
    job = {
        True: "; its job on the training server was stopped",
        False: "; its job on the training server could not be stopped (see the task's log)",
        None: "",
    }[stopped]
    status = _step_status(logger, workflow_task_id, step)
    if why == "failed" and status == StepStatus.RUNNING:
        logger.warning(workflow_task_id, step, f"{step} was marked failed in Airflow{job}")
        with contextlib.suppress(IllegalTransition):  # the stage's own code closed it meanwhile
            logger.store.fail_step(
                workflow_task_id, step, f"cancelled: {step} was marked failed in Airflow{job}"
            )
    elif why != "failed" and status in _UNFINISHED:
        reason = f"{step} was marked {why} in Airflow {_UNFINISHED[status]}{job}"
        logger.warning(workflow_task_id, step, f"{reason}; the step is skipped")
        logger.store.skip_steps(workflow_task_id, {step: reason}, run_goes_on=step != STAGE_NAMES[-1])


# what a step skipped by a mark in Airflow had done, by its status then
_UNFINISHED = {
    StepStatus.PENDING: "before it ran",
    StepStatus.RUNNING: "before it finished",
    StepStatus.FAILED: "after it failed",
}


def follow_mark(
    cfg: WorkflowConfig, logger: WorkflowLogger, dag_id: str, run_id: str, step: str, state: str
) -> None:
    """A user set the task instance of stage `step` in run (dag_id, run_id) to `state` in
    Airflow (its UI or REST API, or by marking the run): stop that stage's job when this process
    is the one to (a job followed from the triggerer; a worker's task process stops its own),
    saying so first while the step runs, then record the mark in the step
    (:func:`record_mark`). A task that was cancelled is left to its run's failure, which
    stops all its jobs (:func:`run_failed`)."""
    from fuxictr_workflow.ssh.cancel_jobs import stop_task_jobs

    task = _task_of_run(cfg, logger.store, dag_id, run_id)
    if task is None or task["status"] == TaskStatus.CANCELLED:
        return
    task_id = int(task["id"])
    stopped: bool | None = None
    status = _status_in(task, step)
    # a completed stage's job has ended (the API's retry marks such task instances succeeded)
    if step in JOB_STEPS and cfg.task.follow_jobs_from == "triggerer" and status != StepStatus.COMPLETED:
        if status == StepStatus.RUNNING:
            announce_stop(logger, task_id, step, state)
        try:
            stop_task_jobs(cfg, task_id, task["server"] or cfg.default_server, stages=(step,))
        except Exception as err:  # the step is still closed, its error saying what is left running
            logger.warning(task_id, step, f"could not stop the {step} job: {type(err).__name__}: {err}")
            stopped = False
        else:
            stopped = True
    record_mark(logger, task_id, step, state, stopped)


def _task_of_run(
    cfg: WorkflowConfig, store: WorkflowStore, dag_id: str, run_id: str
) -> dict[str, Any] | None:
    """The workflow task bound to this very run, with its steps (a run of another server's DAG
    may have the same id: whoever triggers a run picks its id)."""
    from fuxictr_workflow.orchestration.dag_params import server_of_dag

    server = server_of_dag(dag_id, cfg.servers, cfg.default_server)
    task_id = None if server is None else store.find_task_by_run(dag_id, run_id, server)
    return None if task_id is None else store.get_task(task_id)


def run_failed(
    cfg: WorkflowConfig,
    logger: WorkflowLogger,
    dag_id: str,
    run_id: str,
    read_states: ReadStates | None = None,
    wait: float = STATE_VISIBLE_WAIT_S,
) -> None:
    """Airflow failed the run (dag_id, run_id): :func:`close_steps_of_failed_run` once the
    failure can be read (see :func:`_reads_as`); one that does not within `wait` seconds was
    taken up again (a user cleared it) and is left to its new try."""
    read = read_states or _states_in_airflow
    if not _reads_as(read, dag_id, run_id, "failed", wait):
        return

    def resumed() -> bool:
        run_state, ti_states = read(dag_id, run_id)
        return run_state != "failed" or taken_up_again(ti_states)

    close_steps_of_failed_run(cfg, logger, dag_id, run_id, resumed=resumed)


def run_succeeded(
    cfg: WorkflowConfig,
    logger: WorkflowLogger,
    dag_id: str,
    run_id: str,
    read_states: ReadStates | None = None,
    wait: float = STATE_VISIBLE_WAIT_S,
) -> None:
    """Airflow counts the run (dag_id, run_id) successful. A run that got there through its
    stages completed its task in its last stage; one a user marked success (Airflow sets its
    running task instances to success and its unfinished ones to skipped) leaves the task's
    unfinished steps to this: each is skipped with the mark as its reason, and the task
    completes, as the run did. The jobs of running stages are stopped by those task instances'
    own marks (:func:`follow_mark`)."""
    store = logger.store
    task = _task_of_run(cfg, store, dag_id, run_id)
    if task is None or task["status"] in FINAL_TASK_STATUSES:
        return
    if not _reads_as(read_states or _states_in_airflow, dag_id, run_id, "success", wait):
        return
    task = store.get_task(int(task["id"]))
    reasons = {
        s["step_name"]: f"the DAG run {run_id} was marked success in Airflow {_UNFINISHED[s['status']]}"
        for s in task["steps"]
        if s["status"] in _UNFINISHED
    }
    skipped = store.skip_steps(int(task["id"]), reasons, run_goes_on=False)
    if skipped:
        logger.warning(
            int(task["id"]),
            None,
            f"the DAG run {run_id} was marked success in Airflow: {', '.join(skipped)} skipped, "
            "the task ends completed without their work",
        )


def _reads_as(
    read: ReadStates,
    dag_id: str,
    run_id: str,
    state: str,
    wait: float,
) -> bool:
    """Whether the run reads as `state` within `wait` seconds. The scheduler tells its listeners
    of a run's end before it commits it (an API request's session may commit after its
    hooks ran too), so the hook's thread reads the run from Airflow's metadata DB until it shows."""
    deadline = time.monotonic() + wait
    while read(dag_id, run_id)[0] != state:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
    return True


def _states_in_airflow(dag_id: str, run_id: str) -> tuple[str | None, list[str | None]]:
    """The run's state and its task instances' states, as Airflow's metadata DB has them (the
    listeners run in the scheduler and the API server, which reach it)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run_state = session.scalar(
            select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        )
        ti_states = session.scalars(
            select(TaskInstance.state).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        ).all()
    return (None if run_state is None else str(run_state)), [None if t is None else str(t) for t in ti_states]


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
    while the run stays failed: this can run seconds late, after a user has cleared the
    run and a new try has started the step (`resumed` says whether Airflow runs it again). A try
    that starts the step after that check takes a new attempt, which the write below leaves
    alone (the store's compare-and-set on the step's attempt). The run of a task that was
    cancelled failed because the cancel marked it so: its jobs are stopped, its steps were
    closed by the cancel."""
    from fuxictr_workflow.ssh.cancel_jobs import stop_jobs_of

    store = logger.store
    task = _task_of_run(cfg, store, dag_id, run_id)
    if task is None:
        return
    task_id = int(task["id"])
    if task["status"] == TaskStatus.CANCELLED:
        stop_jobs_of(cfg, task, logger, why="cancel")
        return
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
    if resumed():
        return
    if running:
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
    _fail_if_still_open(store, task_id, run_id)


def _fail_if_still_open(store: WorkflowStore, task_id: int, run_id: str) -> None:
    """The run failed, yet its task reads running with no step running: it failed between two
    stages (a user marked the run failed), or its last stage failed with a retry to come that a
    mark in Airflow then called off. Nothing will run it now: it fails, naming its failed stage
    if any. (A pending task is left: a retry through the API resets it before it clears the run.)"""
    task = store.get_task(task_id)
    if task["status"] != TaskStatus.RUNNING or any(s["status"] == StepStatus.RUNNING for s in task["steps"]):
        return
    failed = next((s for s in task["steps"] if s["status"] == StepStatus.FAILED), None)
    reason = f"the DAG run {run_id} failed" + (
        f"; {failed['step_name']} failed: {failed['error_message']}" if failed else " between two stages"
    )
    store.fail_task(task_id, reason)


def taken_up_again(ti_states: Iterable[str | None]) -> bool:
    """Whether a failed run runs again, from its task instances' states: some is no longer
    ended (a user cleared it, and with it the run)."""
    return any(state not in ENDED_TI_STATES for state in ti_states)


def _step_status(logger: WorkflowLogger, workflow_task_id: int, step: str) -> str:
    return _status_in(logger.store.get_task(workflow_task_id), step)


def _status_in(task: dict[str, Any], step: str) -> str:
    return str(next(s["status"] for s in task["steps"] if s["step_name"] == step))
