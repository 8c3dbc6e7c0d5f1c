"""Stopping a task's train and infer jobs on its training server, when it was cancelled, a
user marked a job stage's task instance in Airflow, or its DAG run failed with a stage still
running (orchestration/airflow_stops.py, from Airflow's listener hooks).

A cancel marks the task's run failed in Airflow, and the run's failure stops the jobs, so it
does not depend on a process following the job: a task between starting its job and
deferring has neither. A stage that starts a job after the cancel was recorded finds the
task cancelled and stops its job itself (FuxiCTRStageOperator), so every job of a cancelled
task is stopped by one side or the other.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Iterable
from typing import Any

from fuxictr_workflow.domain import paths
from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.domain.stages import JOB_STAGES, JOB_STEPS, StepStatus
from fuxictr_workflow.ssh.commands import run_command
from fuxictr_workflow.ssh.runner_bundle import job_py
from fuxictr_workflow.ssh.runner_job import RemoteJob, job_dir
from fuxictr_workflow.ssh.servers import endpoint, prepare_remote_root
from fuxictr_workflow.workflow_log import WorkflowLogger


def stop_task_jobs(
    cfg: WorkflowConfig, task_id: int, server: str, stages: Iterable[str] = JOB_STEPS
) -> dict[str, str]:
    """Stop the task's jobs of `stages` on `server`; returns each job's state afterwards, by
    stage (stages that never started a job are left out)."""
    ep = endpoint(cfg, server)
    stopped: dict[str, str] = {}
    wanted = set(stages)
    with ep.paramiko_client() as client:
        ep = prepare_remote_root(ep, client)
        run = run_command(client)
        task_dir = paths.remote_task_dir(ep.remote_root, task_id)
        for stage in (s for s in JOB_STAGES if s.value in wanted):
            where = job_dir(task_dir, stage.value)
            marker = posixpath.join(where, "job.json")
            if run(f"test -e {shlex.quote(marker)} && echo yes || true").strip() != "yes":
                continue
            stopped[stage.value] = str(
                RemoteJob(run, ep.python, job_py(ep.remote_root), where).stop()["state"]
            )
    return stopped


def stop_jobs_of(cfg: WorkflowConfig, task: dict[str, Any], logger: WorkflowLogger, why: str) -> None:
    """Stop the task's jobs if a job stage has begun, saying so (and `why`) in the task's log.
    A server that cannot be reached is reported there."""
    if not any(s["step_name"] in JOB_STEPS and s["status"] != StepStatus.PENDING for s in task["steps"]):
        return
    server = task["server"] or cfg.default_server
    try:
        stopped = stop_task_jobs(cfg, task["id"], server)
    except Exception as err:  # what stopped the task stands; what failed is said in the task's log
        logger.warning(
            task["id"],
            None,
            f"{why}: could not stop the jobs on training server {server}: {type(err).__name__}: {err}",
        )
        return
    for step, state in stopped.items():
        logger.info(task["id"], step, f"{why}: the {step} job on training server {server} is {state}")
