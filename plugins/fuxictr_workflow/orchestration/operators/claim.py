"""The pipeline DAG's first task: this run becomes its workflow task's one active run."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseOperator

from fuxictr_workflow.domain.config import get_config
from fuxictr_workflow.domain.task_fields import TASK_FIELDS
from fuxictr_workflow.orchestration import airflow_runs
from fuxictr_workflow.orchestration.dag_params import CLAIM_TASK_ID
from fuxictr_workflow.orchestration.operators.base import (
    explicit_task_id,
    refuse,
    refuse_if_running_elsewhere,
    run_of,
    workflow_task,
)
from fuxictr_workflow.workflow_log import get_logger

__all__ = ["CLAIM_TASK_ID", "ClaimTaskOperator", "park_beside_a_tasks_test"]


def park_beside_a_tasks_test(context: Any, log: logging.Logger) -> None:
    """Wait (reschedule) while the run is one `airflow tasks test` is using, see
    airflow_runs.py: decided from which of the run's tasks Airflow has executing, never from the
    run's id or conf, which whoever triggers a run chooses."""
    dag_id, run_id = run_of(context)
    states = context["ti"].get_task_states(dag_id=dag_id, run_ids=[run_id]).get(run_id) or {}
    executing = airflow_runs.executing_elsewhere(states, context["ti"].task_id)
    params = context["params"]
    fieldless = explicit_task_id(context) is None and all(params.get(f) in (None, "") for f in TASK_FIELDS)
    dag_run = context["dag_run"]
    started = getattr(dag_run, "start_date", None) or getattr(dag_run, "run_after", None)
    now = datetime.now(UTC)
    wait = airflow_runs.claim_wait(executing=executing, fieldless=fieldless, started=started, now=now)
    if wait is None:
        return
    from airflow.sdk.exceptions import AirflowRescheduleException

    if executing:
        log.info(
            "%s is executing %s outside the scheduler (`airflow tasks test`); claim_task waits",
            run_id,
            executing,
        )
    else:
        log.info(
            "%s names no task and no task fields; waiting briefly in case `airflow tasks test` made it",
            run_id,
        )
    raise AirflowRescheduleException(reschedule_date=now + wait)


class ClaimTaskOperator(BaseOperator):
    """The DAG's first task: resolves the run's workflow task and makes this run its owner,
    refusing (naming ``task_id``) while another run of the same task is active.

    It is also the DAG's only root, so in a run `airflow tasks test` made for one stage the
    scheduler can start nothing but this task, which parks; the stage under test is never raced.
    """

    ui_color = "#e8f0fe"

    def execute(self, context: Any) -> int:
        alone = airflow_runs.in_tasks_test_command()
        if not alone:
            park_beside_a_tasks_test(context, self.log)
        cfg = get_config()
        store = get_logger().store
        task = workflow_task(context, store, cfg)
        dag_id, run_id = run_of(context)
        refuse_if_running_elsewhere(context, task, cfg)
        if not alone and not store.claim_task(task["id"], dag_id, run_id, task["dag_run_id"]):
            refuse_if_running_elsewhere(context, store.get_task(task["id"], with_steps=False), cfg)
            raise refuse(f"task_id: workflow task {task['id']} was claimed by another run just now")
        self.log.info("DAG run %s of %s runs workflow task %s", run_id, dag_id, task["id"])
        return int(task["id"])
