"""Airflow's listener hooks, registered by the plugin: the workflow follows what Airflow does
to a pipeline run that no stage's own code sees.

Airflow calls them in the process that made the change: the API server for a mark in the UI
or the REST API (the plugin's cancel marks the run failed there too), the scheduler for a run
that failed by itself. What they set off (an SSH round trip to the training server, store
writes) runs in a thread of its own, so neither a request nor the scheduler's loop waits on a
training server; the thread is not a daemon, so a process that ends (`airflow dags test`)
finishes the stop first.

The module is imported by every Airflow process that loads plugins (task processes too): it
imports the workflow's modules only when a hook fires for a pipeline DAG.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from airflow.listeners import hookimpl

from fuxictr_workflow.domain.stages import JOB_STEPS, STAGE_NAMES

log = logging.getLogger(__name__)


def _pipeline_dag(cfg: Any, dag_id: str) -> bool:
    from fuxictr_workflow.orchestration.dag_params import server_of_dag

    return server_of_dag(dag_id, cfg.servers, cfg.default_server) is not None


def _in_background(name: str, work: Callable[..., None], *args: Any) -> None:
    """`work(config, workflow logger, *args)` in a thread; its failure is logged."""

    def run() -> None:
        from fuxictr_workflow.domain.config import get_config
        from fuxictr_workflow.workflow_log import get_logger

        try:
            work(get_config(), get_logger(), *args)
        except Exception:
            log.exception("%s failed", name)

    threading.Thread(target=run, name=name).start()


def _marked(task_instance: Any, state: str) -> None:
    """A stage's task instance set to `state` by hand: the store follows (see
    airflow_stops.follow_mark). A job's stop is this hook's when the job is followed from the
    triggerer (the default): the deferred trigger is cancelled, and a try that died is not
    retried after a mark, so no process of the task instance may be left to see it. With jobs
    followed from a worker, the worker's task process follows the job, and its on_kill stops it
    and records a failed mark (with whether the stop worked); this hook records the other marks."""
    from fuxictr_workflow.domain.config import get_config
    from fuxictr_workflow.orchestration import airflow_stops

    ti, cfg = task_instance, get_config()
    if ti.task_id not in STAGE_NAMES or not _pipeline_dag(cfg, ti.dag_id):
        return
    if ti.task_id in JOB_STEPS and cfg.task.follow_jobs_from == "worker" and state == "failed":
        return
    _in_background(
        f"fxw-marked-{ti.run_id}-{ti.task_id}",
        airflow_stops.follow_mark,
        ti.dag_id,
        ti.run_id,
        ti.task_id,
        state,
    )


# previous_state is None for a state set by hand (Airflow's task instance and DAG run PATCH
# routes); a try that ended by itself (previous_state running) records its own end.
@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    if previous_state is None:
        _marked(task_instance, "failed")


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    if previous_state is None:
        _marked(task_instance, "success")


@hookimpl
def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
    if previous_state is None:
        _marked(task_instance, "skipped")


def _run_ended(dag_run: Any, outcome: str, work: Callable[..., None]) -> None:
    """A pipeline run failed or succeeded (`outcome`): `work` follows it in the background."""
    from fuxictr_workflow.domain.config import get_config

    if _pipeline_dag(get_config(), dag_run.dag_id):
        log.info("the workflow follows the %s of DAG run %s of %s", outcome, dag_run.run_id, dag_run.dag_id)
        _in_background(f"fxw-{work.__name__}-{dag_run.run_id}", work, dag_run.dag_id, dag_run.run_id)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    from fuxictr_workflow.orchestration import airflow_stops

    _run_ended(dag_run, "failure", airflow_stops.run_failed)


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    from fuxictr_workflow.orchestration import airflow_stops

    _run_ended(dag_run, "success", airflow_stops.run_succeeded)
