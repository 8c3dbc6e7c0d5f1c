"""DAG runs for workflow tasks: started, and cleared for a retry, through Airflow's REST API as
the caller (airflow_api.py)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection
from typing import Any

from fastapi import status

from fuxictr_workflow.api.airflow_api import AirflowApi, AirflowRefused
from fuxictr_workflow.orchestration.dag_params import CLAIM_TASK_ID

# Task instance states a retry leaves alone in an earlier stage.
FINISHED_WELL = frozenset({"success", "skipped"})
FINISHED_RUN_STATES = frozenset({"success", "failed"})

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


def trigger(api: AirflowApi, dag_id: str, run_id: str, conf: dict[str, Any]) -> str:
    """Create a queued manual DAG run through Airflow's trigger route, as the caller (`api`):
    they become the run's triggering user, and Airflow's audit log has the trigger. Raises
    TriggerError with a user-facing reason."""
    from airflow.utils import timezone

    dag = _dag(api, dag_id)
    # Airflow queues a run of a paused DAG; it would wait unseen until someone unpauses it.
    if dag is not None and not dag["is_stale"] and not dag["has_import_errors"] and dag["is_paused"]:
        raise TriggerError(f"DAG {dag_id} is paused; unpause it in the Airflow UI, then retry the task")
    # A logical date, as the UI's trigger form gives: `airflow tasks test` (without a run id)
    # deletes one run of the DAG whose logical date is null to make room for its own.
    try:
        api.trigger_run(dag_id, run_id, conf, timezone.utcnow().isoformat())
    except AirflowRefused as err:
        # 409: the id, or the logical date, is taken (Airflow's app answers unique violations so)
        if err.status_code == status.HTTP_409_CONFLICT:
            raise RunIdTaken(
                f"could not trigger DAG {dag_id}: it has a run {run_id} (or one of the same logical date) already"
            ) from err
        raise TriggerError(_reason(dag_id, dag, err)) from err
    return run_id


def _dag(api: AirflowApi, dag_id: str) -> dict[str, Any] | None:
    """The DAG as Airflow's REST API shows it to the caller; None when Airflow has no such DAG."""
    try:
        return api.dag(dag_id)
    except AirflowRefused as err:
        if err.status_code == status.HTTP_404_NOT_FOUND:
            return None
        raise TriggerError(f"could not read DAG {dag_id} in Airflow: {err.detail}") from err


def _reason(dag_id: str, dag: dict[str, Any] | None, err: AirflowRefused) -> str:
    """What a refusal of Airflow's trigger route means for the workflow, and what to do."""
    if dag is None or dag["is_stale"]:
        return f"DAG {dag_id} is not in Airflow (is dags/fuxictr_workflow.py in the DAGs folder?)"
    if dag["has_import_errors"]:
        return f"DAG {dag_id} has import errors; see the Airflow UI's import errors"
    if err.status_code == status.HTTP_404_NOT_FOUND:
        return f"DAG {dag_id} has not been serialized yet; wait for the dag-processor"
    return f"could not trigger DAG {dag_id}: {err.detail}"


def wait_until_settled(api: AirflowApi, dag_id: str, run_id: str, timeout: float = SETTLE_TIMEOUT_S) -> bool:
    """True once the run is finished (or not in Airflow), False if it still runs after `timeout`.

    The workflow store records a stage's failure as the task fails, before the scheduler has
    marked the task's downstream stages upstream_failed and the run failed. Clearing in that
    window loses to the scheduler: it writes upstream_failed over the cleared stages and the
    resumed run stops after its first stage. So a retry clears only a finished run."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = api.run_state(dag_id, run_id)
        except AirflowRefused as err:
            if err.status_code == status.HTTP_404_NOT_FOUND:
                return True
            raise
        if state in FINISHED_RUN_STATES:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def clear_from(api: AirflowApi, dag_id: str, run_id: str, stages: Collection[str]) -> int:
    """Re-queue an existing run at the given stages with Airflow's clear, as the caller.

    The task instances of ``stages`` (a stage is one Airflow task or a task group of them) and
    claim_task are cleared; the run goes back to queued and the scheduler resumes it, so
    successful earlier stages are not redone. An earlier stage whose task instances did not
    succeed in Airflow although the store has it completed (its process died after recording
    the step) is marked succeeded, not run again. Returns the number of task instances
    cleared: 0 when the run or its tasks are not in Airflow (the caller then starts a new run).
    """
    try:
        states = api.task_instance_states(dag_id, run_id)
    except AirflowRefused as err:
        if err.status_code == status.HTTP_404_NOT_FOUND:
            return 0
        raise
    # claim_task too: the re-queued run claims its task again (and a claim_task a cancel
    # skipped would otherwise skip every stage after it)
    task_ids = [t for t in states if t == CLAIM_TASK_ID or t.split(".", 1)[0] in stages]
    if not task_ids:
        return 0
    for task_id, state in states.items():
        if task_id not in task_ids and state not in FINISHED_WELL:
            api.mark_succeeded(dag_id, run_id, task_id)
    return api.clear(dag_id, run_id, task_ids)
