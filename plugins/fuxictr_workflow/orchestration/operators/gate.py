"""The quality gate: the first task of hive_upload. A training that passes publishes as
before; one that came out clearly worse than the experiment's last published model waits for
a person's Approve or Reject through Airflow's human-in-the-loop operator.

While it waits the task instance is parked in Airflow's ``awaiting_input`` state: no worker
slot, no process, no trigger. The decision comes from Airflow's Required Actions page, its
REST API (``PATCH .../taskInstances/{task_id}/{map_index}/hitlDetails``, with Airflow's own
permission check and audit log) or the workflow view, which calls that API as its user.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from fuxictr_workflow import gate_review
from fuxictr_workflow.domain.config import get_config
from fuxictr_workflow.domain.quality_gate import Decision, GateRecord
from fuxictr_workflow.domain.stages import Stage, StepStatus, TaskStatus
from fuxictr_workflow.orchestration import airflow_runs
from fuxictr_workflow.orchestration.dag_params import GATE_TASK_ID
from fuxictr_workflow.orchestration.operators.base import refuse, workflow_task
from fuxictr_workflow.workflow_log import get_logger

__all__ = ["GATE_TASK_ID", "QualityGateOperator"]

STEP = Stage.HIVE_UPLOAD.value


class QualityGateOperator(ApprovalOperator):
    ui_color = "#fff4e5"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            subject="Publish a model that came out worse than the published one?",
            # Reject skips every later task of the run: nothing reaches Hive
            ignore_downstream_trigger_rules=True,
            **kwargs,
        )

    def execute(self, context: Any) -> Any:
        cfg, logger = get_config(), get_logger()
        task = workflow_task(context, logger.store, cfg)
        if task["status"] == TaskStatus.CANCELLED:
            raise refuse(f"task_id: workflow task {task['id']} was cancelled")
        hive_upload = next(s["status"] for s in task["steps"] if s["step_name"] == STEP)
        if hive_upload == StepStatus.COMPLETED:
            logger.info(task["id"], STEP, "quality gate: the predictions are published already")
            return None
        record = gate_review.review(logger.store, cfg, task)
        if record is None:
            return None  # the gate is off for this experiment
        if airflow_runs.in_tasks_test_command():
            if record.decision in (Decision.PASSED, Decision.APPROVED):
                logger.info(task["id"], STEP, f"quality gate {record.decision}: {record.reason}")
                return None
            raise refuse(
                f"quality gate: {record.decision} ({record.reason}); a person decides in a DAG run, "
                "not under `airflow tasks test`"
            )
        if record.decision == Decision.PASSED:
            logger.store.quality_gates.pass_gate(task["id"], record)
            logger.info(task["id"], STEP, f"quality gate passed: {record.reason}")
            return None
        if record.decision in (Decision.APPROVED, Decision.REJECTED):
            # decided on this training already (this is a retry): the decision stands
            self._carry_out(context, task, record, skip_rest=True)
            return None
        logger.store.quality_gates.hold(task["id"], record)
        logger.warning(
            task["id"],
            STEP,
            f"quality gate: held for a decision ({record.reason}); approve or reject it in the "
            "workflow view or Airflow's Required Actions",
        )
        self.body = gate_review.describe(task, record)
        return super().execute(context)  # parks the task instance until the decision

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" in event:  # the wait timed out, or the trigger failed: the run fails
            return super().execute_complete(context, event)
        cfg, logger = get_config(), get_logger()
        task = workflow_task(context, logger.store, cfg)
        held = gate_review.stored_record(logger.store, task["id"])
        if held is None:
            raise refuse(f"quality gate: workflow task {task['id']} has no held review to decide")
        approved = ApprovalOperator.APPROVE in (event.get("chosen_options") or [])
        user = event.get("responded_by_user") or {}
        decided = gate_review.decided(held, approved, user.get("name") or user.get("id"))
        self._carry_out(context, task, decided, skip_rest=False)
        return super().execute_complete(context, event)  # on Reject, skips the rest of hive_upload

    def _carry_out(self, context: Any, task: dict[str, Any], record: GateRecord, *, skip_rest: bool) -> None:
        """Record the decision and set the task's status; with `skip_rest`, a rejection skips
        the rest of hive_upload here (on a resume, ApprovalOperator does)."""
        logger = get_logger()
        if record.decision == Decision.APPROVED:
            logger.store.quality_gates.approve(task["id"], record)
            logger.info(task["id"], STEP, f"quality gate approved by {record.decided_by}; publishing")
            return
        message = gate_review.rejection_message(record)
        # the line goes first: a log WebSocket closes once the task is final
        logger.warning(task["id"], STEP, message)
        logger.store.quality_gates.reject(task["id"], record, message)
        if skip_rest:
            self.skip(
                ti=context["ti"],
                tasks=[t for t in self.get_flat_relatives(upstream=False) if not t.is_teardown],
            )
