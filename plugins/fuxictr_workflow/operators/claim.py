"""The pipeline DAG's first task: this run becomes its workflow task's one active run."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from fuxictr_workflow import airflow_runs
from fuxictr_workflow.config import get_config
from fuxictr_workflow.dag_params import CLAIM_TASK_ID
from fuxictr_workflow.operators.base import (
    park_unless_under_test,
    refuse,
    refuse_if_running_elsewhere,
    workflow_task,
)
from fuxictr_workflow.workflow_log import get_logger

__all__ = ["CLAIM_TASK_ID", "ClaimTaskOperator"]


class ClaimTaskOperator(BaseOperator):
    """The DAG's first task: resolves the run's workflow task and makes this run its owner,
    refusing (naming ``task_id``) while another run of the same task is active.

    It is also the DAG's only root, so in a run `airflow tasks test` made for one stage the
    scheduler can start nothing but this task, which parks; the stage under test is never raced.
    """

    ui_color = "#e8f0fe"

    def execute(self, context: Any) -> int:
        park_unless_under_test(context, self.log)
        cfg = get_config()
        store = get_logger().store
        task = workflow_task(context, store, cfg)
        run_id = context["dag_run"].run_id
        refuse_if_running_elsewhere(context, task, cfg)
        if not airflow_runs.is_tasks_test_run(run_id) and not store.claim_task(
            task["id"], run_id, task["dag_run_id"]
        ):
            refuse_if_running_elsewhere(context, store.get_task(task["id"], with_steps=False), cfg)
            raise refuse(f"task_id: workflow task {task['id']} was claimed by another run just now")
        self.log.info("DAG run %s runs workflow task %s", run_id, task["id"])
        return int(task["id"])
