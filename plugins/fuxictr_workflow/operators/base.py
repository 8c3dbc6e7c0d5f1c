"""What every stage operator shares: which workflow task it works for, and tracking.

A stage operator mixes :class:`WorkflowStageMixin` in front of its Airflow base class
(BaseOperator, HiveOperator, SSHOperator ...) and implements ``execute_stage``; the mixin's
``execute`` resolves the workflow task, records the stage lifecycle in the store and
heartbeats while the stage runs.
"""

from __future__ import annotations

from typing import Any

from fuxictr_workflow.config import WorkflowConfig, get_config
from fuxictr_workflow.stages import Stage, StepStatus
from fuxictr_workflow.store import WorkflowStore
from fuxictr_workflow.tracking import StageError, StageRun, track_stage
from fuxictr_workflow.validation import TASK_FIELDS, FieldError, validate_server, validate_task_fields
from fuxictr_workflow.workflow_log import WorkflowLogger, get_logger


def resolve_task_id(context: Any, store: WorkflowStore, cfg: WorkflowConfig) -> int:
    """The workflow task of this DAG run.

    Runs created through the API carry ``task_id`` in their conf; `airflow tasks test ...
    -t '{"task_id": N}'` names an existing task to re-run one stage of. A run triggered from
    the Airflow UI (or `airflow dags test`) has neither: its task row is created from the
    run's params on first use, keyed by the run id, so UI and API see the same tasks.
    """
    dag_run = context["dag_run"]
    conf = dag_run.conf or {}
    params = context["params"]
    explicit = conf.get("task_id") if conf.get("task_id") is not None else params.get("task_id")
    if explicit is not None:
        return int(explicit)
    fields = {f: params.get(f) for f in TASK_FIELDS}
    return store.task_for_run(dag_run.run_id, fields, server=params.get("server") or cfg.default_server)


def validate_run_fields(task: dict[str, Any], cfg: WorkflowConfig) -> None:
    """Re-check the stored fields before any stage touches Hive, a shell or the server."""
    validate_task_fields(task, cfg)
    validate_server(task.get("server"), list(cfg.servers))


class WorkflowStageMixin:
    """Mixin for stage operators. Subclasses set ``stage`` and implement ``execute_stage``."""

    stage: Stage
    opens_step: bool = True
    closes_step: bool = True

    def execute(self, context: Any) -> Any:
        cfg = get_config()
        logger = get_logger()
        task_id = resolve_task_id(context, logger.store, cfg)
        self.workflow_task = logger.store.get_task(task_id)
        self.workflow_config = cfg
        if (context["dag_run"].conf or {}).get("resume") and self._step_status() == StepStatus.COMPLETED:
            # a retry run (API `retry`) resumes at the first unfinished stage
            logger.info(task_id, self.stage.value, f"{self.stage.value} already completed; not redone")
            return None
        ti = context["ti"]
        # max_tries, not retries: a cleared task (API retry) keeps counting try_number upwards
        will_retry = ti.try_number <= (getattr(ti, "max_tries", None) or getattr(self, "retries", 0) or 0)
        try:
            return self._tracked(context, run_args=(task_id, logger, cfg, will_retry))
        except StageError as err:
            if err.retryable:
                raise
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(str(err)) from err

    def _tracked(self, context: Any, run_args: tuple[int, WorkflowLogger, WorkflowConfig, bool]) -> Any:
        task_id, logger, cfg, will_retry = run_args
        with track_stage(
            task_id,
            self.stage.value,
            logger=logger,
            heartbeat_interval=cfg.task.heartbeat_interval,
            will_retry=will_retry,
            opens_step=self.opens_step,
            closes_step=self.closes_step,
        ) as run:
            try:
                validate_run_fields(self.workflow_task, cfg)
            except FieldError as err:
                raise StageError(str(err), retryable=False) from None
            return self.execute_stage(context, run)

    def _step_status(self) -> str:
        return next(s["status"] for s in self.workflow_task["steps"] if s["step_name"] == self.stage.value)

    def execute_stage(self, context: Any, run: StageRun) -> Any:
        raise NotImplementedError


__all__ = ["WorkflowLogger", "WorkflowStageMixin", "resolve_task_id"]
