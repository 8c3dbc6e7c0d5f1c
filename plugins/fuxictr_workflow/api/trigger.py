"""DAG runs for workflow tasks, through Airflow's own functions (in the API server process)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request, status

from fuxictr_workflow.dag_params import CLAIM_TASK_ID

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
    from airflow.models.dag import DagModel

# How long a retry waits for the scheduler to finish a failing run (it marks the run failed in
# the pass after the failing task, a few scheduler heartbeats later).
SETTLE_TIMEOUT_S = 60.0


# How many fresh run ids a start tries when the one it picked is taken.
RUN_ID_TRIES = 3


class TriggerError(RuntimeError):
    """The DAG run could not be created; the message says why and what to do."""


class RunIdTaken(TriggerError):
    """The DAG has a run with that id (or that logical date) already: a fresh id may work."""


def run_id_for(task_id: int, attempt: int = 0) -> str:
    """A new run id for a task's run: ``workflow_task_<id>[_retry_<attempt>]__<random>``.

    The random part makes the id unguessable: anyone allowed to trigger the DAG can create a
    run with any free id, and with predictable ids pre-created runs would take the ids of the
    next tasks (their trigger would fail, and so would every retry with the same id)."""
    return f"workflow_task_{task_id}" + (f"_retry_{attempt}" if attempt else "") + f"__{secrets.token_hex(8)}"


def trigger(dag_id: str, run_id: str, conf: dict[str, Any], user: BaseUser, request: Request) -> str:
    """Create a queued manual DAG run with Airflow's own trigger route, called in-process.

    `user` becomes the run's triggering user and `request` (the caller's request to the
    plugin) tells the route whether the UI or the REST API triggered it. Raises TriggerError
    with a user-facing reason."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody
    from airflow.api_fastapi.core_api.routes.public.dag_run import trigger_dag_run
    from airflow.models.dag import DagModel
    from airflow.models.dagbag import DBDagBag
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    # A logical date, as the UI's trigger form gives: `airflow tasks test` (without a run id)
    # deletes one run of the DAG whose logical date is null to make room for its own.
    body = TriggerDAGRunPostBody(dag_run_id=run_id, conf=conf, logical_date=timezone.utcnow())
    with create_session() as session:
        model = session.scalar(select(DagModel).where(DagModel.dag_id == dag_id))
        # Airflow queues a run of a paused DAG; it would wait unseen until someone unpauses it.
        if model is not None and not model.is_stale and not model.has_import_errors and model.is_paused:
            raise TriggerError(f"DAG {dag_id} is paused; unpause it in the Airflow UI, then retry the task")
        try:
            trigger_dag_run(
                dag_id=dag_id, body=body, dag_bag=DBDagBag(), user=user, session=session, request=request
            )
            session.flush()
        except HTTPException as err:
            if err.status_code == status.HTTP_409_CONFLICT:
                raise RunIdTaken(_reason(dag_id, model, err)) from err
            raise TriggerError(_reason(dag_id, model, err)) from err
        except IntegrityError as err:  # the route leaves unique violations to Airflow's app (409)
            raise RunIdTaken(
                f"could not trigger DAG {dag_id}: it has a run {run_id} (or one of the same logical date) already"
            ) from err
    return run_id


def _reason(dag_id: str, model: DagModel | None, err: HTTPException) -> str:
    """What a refusal of Airflow's trigger route means for the workflow, and what to do."""
    if model is None or model.is_stale:
        return f"DAG {dag_id} is not in Airflow (is dags/fuxictr_workflow.py in the DAGs folder?)"
    if model.has_import_errors:
        return f"DAG {dag_id} has import errors; see the Airflow UI's import errors"
    if err.status_code == status.HTTP_404_NOT_FOUND:
        return f"DAG {dag_id} has not been serialized yet; wait for the dag-processor"
    return f"could not trigger DAG {dag_id}: {err.detail}"


def fail_run(dag_id: str, run_id: str) -> None:
    """Stop a run: running task instances fail, pending ones are skipped."""
    from airflow.api.common.mark_tasks import set_dag_run_state_to_failed
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session

    with create_session() as session:
        dag = DBDagBag().get_latest_version_of_dag(dag_id, session=session)
        if dag is not None:
            set_dag_run_state_to_failed(dag=dag, run_id=run_id, commit=True, session=session)


def wait_until_settled(dag_id: str, run_id: str, timeout: float = SETTLE_TIMEOUT_S) -> bool:
    """True once the run is finished (or not in Airflow), False if it still runs after `timeout`.

    The workflow store records a stage's failure as the task fails, before the scheduler has
    marked the task's downstream stages upstream_failed and the run failed. Clearing in that
    window loses to the scheduler: it writes upstream_failed over the cleared stages and the
    resumed run stops after its first stage. So a retry clears only a finished run."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import State
    from sqlalchemy import select

    deadline = time.monotonic() + timeout
    while True:
        with create_session() as session:
            state = session.scalar(
                select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
            )
        if state is None or state in State.finished_dr_states:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def clear_from(dag_id: str, run_id: str, stages: Collection[str]) -> int:
    """Re-queue an existing run at the given stages with Airflow's own clear.

    The task instances of ``stages`` (a stage is one Airflow task or a task group of them),
    claim_task and any earlier one that did not succeed are cleared; the run goes back to
    queued and the scheduler resumes it, so successful earlier stages are not redone. ``resume`` is set in
    the run's conf so a re-run stage the store already has as completed is skipped. Returns
    the number of task instances cleared: 0 when the run or its tasks are not in Airflow
    (the caller then starts a new run).
    """
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    with create_session() as session:
        dag_run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if dag_run is None:
            return 0
        dag = DBDagBag().get_dag_for_run(dag_run, session=session)
        if dag is None:
            return 0
        unfinished = {
            ti.task_id
            for ti in dag_run.get_task_instances(session=session)
            if ti.state not in (TaskInstanceState.SUCCESS, TaskInstanceState.SKIPPED)
        }
        # claim_task too: the re-queued run claims its task again (and a claim_task a cancel
        # skipped would otherwise skip every stage after it)
        task_ids = [
            t for t in dag.task_ids if t == CLAIM_TASK_ID or t.split(".", 1)[0] in stages or t in unfinished
        ]
        if not task_ids:
            return 0
        dag_run.conf = {**(dag_run.conf or {}), "resume": True}
        return int(dag.clear(task_ids=task_ids, run_id=run_id, session=session) or 0)
