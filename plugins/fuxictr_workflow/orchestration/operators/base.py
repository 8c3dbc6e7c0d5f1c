"""What every task of the pipeline DAG shares: which workflow task it works for, which DAG
run owns that task, and tracking.

A stage operator mixes :class:`WorkflowStageMixin` in front of its Airflow base class
(BaseOperator, HiveOperator, SSHOperator ...) and implements ``execute_stage``; the mixin's
``execute`` resolves the workflow task, records the stage lifecycle in the store and
heartbeats while the stage runs. The DAG's first task (claim.py) makes its run the
workflow task's one active run.

A stage run by `airflow tasks test` (its process has AIRFLOW_TEST_MODE, see airflow_runs.py)
acts alone; in the run the command made, the scheduler's claim_task parks itself (claim.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from airflow.sdk.exceptions import AirflowTaskTimeout

from fuxictr_workflow import retention
from fuxictr_workflow.domain.config import WorkflowConfig, get_config
from fuxictr_workflow.domain.stages import Stage, StepStatus, TaskStatus
from fuxictr_workflow.domain.task_fields import TASK_FIELDS, validate_task_fields
from fuxictr_workflow.domain.validation import FieldError, validate_server
from fuxictr_workflow.orchestration import airflow_runs
from fuxictr_workflow.orchestration.dag_params import dag_id_for, server_of_dag
from fuxictr_workflow.store import NotFound, WorkflowStore
from fuxictr_workflow.tracking import StageError, StageRun, Suspended, track_stage
from fuxictr_workflow.workflow_log import WorkflowLogger, get_logger

log = logging.getLogger(__name__)


def run_of(context: Any) -> tuple[str, str]:
    """The (dag_id, run_id) of the context's DAG run: together they name one run (run ids are
    unique only within one DAG, and each training server has its own DAG)."""
    dag_run = context["dag_run"]
    dag_id = getattr(dag_run, "dag_id", None) or getattr(context.get("ti"), "dag_id", None)
    if not dag_id:
        raise refuse(f"the DAG run {dag_run.run_id!r} has no dag_id")
    return str(dag_id), str(dag_run.run_id)


def bound_dag_id(task: dict[str, Any], cfg: WorkflowConfig) -> str:
    """The DAG of the task's run: recorded with the run, else (rows older than that record)
    its server's DAG."""
    return str(task.get("dag_id") or dag_id_for(task["server"] or cfg.default_server, cfg.default_server))


def explicit_task_id(context: Any) -> Any:
    """The task_id the run's conf (or, under `airflow tasks test -t`, its params) names."""
    conf = context["dag_run"].conf or {}
    return conf.get("task_id") if conf.get("task_id") is not None else context["params"].get("task_id")


def resolve_task_id(context: Any, store: WorkflowStore, cfg: WorkflowConfig) -> int:
    """The workflow task of this DAG run.

    A run the API triggered carries ``task_id`` in its conf, and the API recorded the run,
    (dag_id, run_id), as the task's run before triggering it: the run works for that task only
    if that record names it. The conf alone proves nothing (anyone who may trigger a DAG writes
    its conf and picks its run id). `airflow tasks test ... -t '{"task_id": N}'` names a task to
    re-run one stage of: the command's own process (AIRFLOW_TEST_MODE) may, for a task of this
    DAG's server. A run without ``task_id`` (the Airflow UI, `airflow dags test`) gets its own
    task, created from the run's params on first use and keyed by (dag_id, run_id), so UI and
    API see the same tasks. A run never works for a task of another DAG.
    """
    dag_id, run_id = run_of(context)
    server = server_of_dag(dag_id, cfg.servers, cfg.default_server)
    if server is None:
        raise refuse(f"DAG {dag_id} is not the DAG of a configured training server")
    explicit = explicit_task_id(context)
    if explicit is None:
        fields = {f: context["params"].get(f) for f in TASK_FIELDS}
        return store.task_for_run(dag_id, run_id, fields, server=server)
    if airflow_runs.in_tasks_test_command():
        return _tested_task(explicit, dag_id, store, cfg)
    return _bound_task(explicit, dag_id, run_id, store, cfg)


def _tested_task(explicit: Any, dag_id: str, store: WorkflowStore, cfg: WorkflowConfig) -> int:
    """`airflow tasks test -t '{"task_id": N}'`: any task of this DAG's server."""
    try:
        task = store.get_task(int(explicit), with_steps=False)
    except (NotFound, ValueError, TypeError) as err:
        raise refuse(f"task_id: {err}") from None
    if bound_dag_id(task, cfg) != dag_id:
        raise refuse(
            f"task_id: workflow task {task['id']} is a task of DAG {bound_dag_id(task, cfg)}, "
            f"not of {dag_id}; test its stages in its own DAG"
        )
    return int(task["id"])


def _bound_task(explicit: Any, dag_id: str, run_id: str, store: WorkflowStore, cfg: WorkflowConfig) -> int:
    """A run's conf names a task: it must be the task the API recorded this very run for.
    Another run's task, another DAG's, one that does not exist: the same refusal, so that it
    tells the run's owner nothing about other tasks."""
    try:
        task: dict[str, Any] | None = store.get_task(int(explicit), with_steps=False)
    except (NotFound, ValueError, TypeError):
        task = None
    if task is None or task["dag_run_id"] != run_id or bound_dag_id(task, cfg) != dag_id:
        raise refuse(
            f"task_id: workflow task {explicit} was not started by this DAG run ({dag_id}, {run_id}); "
            "a run works only for the task the workflow API started it for. Create tasks and "
            "retry them through /api/workflow/tasks, or trigger the DAG without task_id"
        )
    return int(task["id"])


def timeout_message(cfg: WorkflowConfig, stage: str) -> str:
    """The step's error when a stage runs out of time: the limit and the key that set it."""
    key = stage if stage in cfg.task.execution_timeout_s else "default"
    return (
        f"{stage} ran longer than its execution_timeout of {cfg.task.execution_timeout(stage)} s "
        f"(config task.execution_timeout_s.{key}); raise it if the stage needs longer"
    )


def refuse(message: str) -> Exception:
    """A failure Airflow must not retry, recorded nowhere in the store (the task is not ours)."""
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(message)


def workflow_task(context: Any, store: WorkflowStore, cfg: WorkflowConfig) -> dict[str, Any]:
    """The workflow task row of this run (refusals name ``task_id``, see resolve_task_id)."""
    return store.get_task(resolve_task_id(context, store, cfg))


def active_run_elsewhere(context: Any, task: dict[str, Any], cfg: WorkflowConfig) -> str | None:
    """The task's owning DAG run if it is another run and still queued or running."""
    owner = task["dag_run_id"]
    dag_id = bound_dag_id(task, cfg)
    if not owner or (dag_id, owner) == run_of(context):
        return None
    active = context["ti"].get_dr_count(
        dag_id=dag_id, run_ids=[owner], states=list(airflow_runs.ACTIVE_RUN_STATES)
    )
    return owner if active else None


def refuse_if_running_elsewhere(context: Any, task: dict[str, Any], cfg: WorkflowConfig) -> None:
    """One workflow task runs in one DAG run at a time."""
    owner = active_run_elsewhere(context, task, cfg)
    if owner is not None:
        raise refuse(
            f"task_id: workflow task {task['id']} already has an active DAG run {owner!r}; "
            f"wait for it to finish or cancel the task (POST /api/workflow/tasks/{task['id']}/cancel), "
            "then trigger it again"
        )


def validate_run_fields(task: dict[str, Any], cfg: WorkflowConfig) -> dict[str, Any]:
    """Re-check the stored fields before any stage touches Hive, a shell or the server.

    Returns the task with its fields as validation cleans them (a task a UI-triggered run
    created holds its params as given), so the stage uses only checked values."""
    fields = validate_task_fields(task, cfg)
    return {**task, **fields.model_dump(), "server": validate_server(task.get("server"), list(cfg.servers))}


class WorkflowStageMixin:
    """Mixin for stage operators. Subclasses set ``stage`` and implement ``execute_stage``."""

    stage: Stage
    opens_step: bool = True
    closes_step: bool = True

    def execute(self, context: Any) -> Any:
        # a stage run by itself (`airflow tasks test`): not retried, and it ends with the task in
        # the status its steps say
        alone = airflow_runs.in_tasks_test_command()
        task_id = self._resolve(context)
        if alone:
            refuse_if_running_elsewhere(context, self.workflow_task, self.workflow_config)
            if self.workflow_task["status"] == TaskStatus.CANCELLED:
                raise refuse(
                    f"task_id: workflow task {task_id} was cancelled; retry it "
                    f"(POST /api/workflow/tasks/{task_id}/retry) before re-running one of its stages"
                )
        self._sweep_host()
        if (context["dag_run"].conf or {}).get("resume") and self._step_status() == StepStatus.COMPLETED:
            # a retry run (API `retry`) resumes at the first unfinished stage
            get_logger().info(task_id, self.stage.value, f"{self.stage.value} already completed; not redone")
            return None
        return self._run_stage(context, alone, self.opens_step, self._validated_stage)

    def resume_stage(self, context: Any, event: dict[str, Any]) -> Any:
        """Back from a deferral (see :class:`Suspended`): the step is still running; the stage
        finishes it with what the trigger reported."""
        alone = airflow_runs.in_tasks_test_command()
        task_id = self._resolve(context)
        if self.workflow_task["status"] == TaskStatus.CANCELLED:
            raise refuse(f"task_id: workflow task {task_id} was cancelled")
        get_logger().info(task_id, self.stage.value, f"{self.stage.value} resumed on a worker to finish")
        return self._run_stage(context, alone, False, lambda ctx, run: self.finish_stage(ctx, run, event))

    def _sweep_host(self) -> None:
        """This worker's staging and log dirs of expired tasks go as its stages start: with
        several workers, no one clean-up run reaches every worker's disk."""
        try:
            report = retention.sweep_host(self.workflow_config, get_logger().store)
        except Exception as err:  # housekeeping must never fail a stage
            log.warning("retention sweep of this host failed: %s: %s", type(err).__name__, err)
            return
        for line in report.lines() if report and report.expired else ():
            log.info("retention sweep: %s", line)

    def _resolve(self, context: Any) -> int:
        self.workflow_config = get_config()
        self.workflow_task = workflow_task(context, get_logger().store, self.workflow_config)
        return int(self.workflow_task["id"])

    def _run_stage(
        self, context: Any, alone: bool, opens_step: bool, body: Callable[[Any, StageRun], Any]
    ) -> Any:
        cfg, task_id, ti = self.workflow_config, int(self.workflow_task["id"]), context["ti"]
        # max_tries, not retries: a cleared task (API retry) keeps counting try_number upwards
        will_retry = ti.try_number <= (getattr(ti, "max_tries", None) or getattr(self, "retries", 0) or 0)
        try:
            with track_stage(
                task_id,
                self.stage.value,
                logger=get_logger(),
                heartbeat_interval=cfg.task.heartbeat_interval,
                will_retry=will_retry and not alone,
                opens_step=opens_step,
                closes_step=self.closes_step,
                alone=alone,
            ) as run:
                try:
                    result = body(context, run)
                except AirflowTaskTimeout:
                    raise self._timed_out(run) from None
        except StageError as err:
            if err.retryable and not alone:
                raise
            raise refuse(str(err)) from None  # the reason is the whole message; no traceback chain
        if isinstance(result, Suspended):
            self.defer(trigger=result.waiting_for, method_name="resume_stage")  # type: ignore[attr-defined]
        return result

    # a stage past its execution_timeout is retried like any failure (a retry resumes what
    # was done); train and infer, whose retry would only follow or redo the same job, are not
    retry_after_timeout: bool = True

    def _timed_out(self, run: StageRun) -> StageError:
        """Airflow's execution_timeout fired inside the stage: stop what it started, and say
        which config key set the limit."""
        try:
            self.on_stage_timeout(run)
        except Exception as err:  # the failure below is what the user must see first
            run.warning(f"{self.stage.value}: stopping its work after the timeout failed: {err}")
        return StageError(
            timeout_message(self.workflow_config, self.stage.value), retryable=self.retry_after_timeout
        )

    def on_stage_timeout(self, run: StageRun) -> None:
        """Stop what the stage started (Airflow calls on_kill only for a timeout it handles itself)."""
        self.on_kill()  # type: ignore[attr-defined]

    def _validated_stage(self, context: Any, run: StageRun) -> Any:
        try:
            self.workflow_task = validate_run_fields(self.workflow_task, self.workflow_config)
        except FieldError as err:
            raise StageError(str(err), retryable=False) from None
        return self.execute_stage(context, run)

    def finish_stage(self, context: Any, run: StageRun, event: dict[str, Any]) -> Any:
        """For stages that suspend: finish the step from the trigger's event."""
        raise NotImplementedError

    def _step_status(self) -> str:
        return next(s["status"] for s in self.workflow_task["steps"] if s["step_name"] == self.stage.value)

    def execute_stage(self, context: Any, run: StageRun) -> Any:
        raise NotImplementedError


__all__ = ["WorkflowLogger", "WorkflowStageMixin", "resolve_task_id"]
