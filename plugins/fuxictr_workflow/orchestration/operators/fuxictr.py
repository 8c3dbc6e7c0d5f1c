"""Stages train and infer: remote/runner.py on the training server over SSH.

The runner bundle is shipped and verified before each run (runner_bundle.py). The runner runs as a detached job under remote/job.py (one per task and stage), followed from
the triggerer while the Airflow task is deferred; its JSON lines reach the workflow log within
a poll interval, and its final metrics become the step result and the XCom.

    TrainOperator(task_id="train", pool=...)
    InferOperator(task_id="infer", pool=...)
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from airflow.providers.ssh.operators.ssh import SSHOperator

from fuxictr_workflow.domain import paths
from fuxictr_workflow.domain.config import get_config
from fuxictr_workflow.domain.stages import Stage, StepStatus, TaskStatus
from fuxictr_workflow.orchestration import airflow_runs, airflow_stops
from fuxictr_workflow.orchestration.operators.base import WorkflowStageMixin, timeout_message
from fuxictr_workflow.orchestration.triggers.runner_job import RunnerJobTrigger
from fuxictr_workflow.ssh.commands import run_command
from fuxictr_workflow.ssh.runner_bundle import DEMO_CONFIG_DIR, DEMO_MODELS, ship_demo, ship_runner
from fuxictr_workflow.ssh.runner_job import JobFollower, RemoteJob, RunnerOutput, ended_at, job_dir
from fuxictr_workflow.ssh.servers import (
    HOST_KEY_WARNING,
    Endpoint,
    RemoteRootError,
    SSHAccessError,
    endpoint,
    prepare_remote_root,
)
from fuxictr_workflow.ssh.ssh_access import is_refusal
from fuxictr_workflow.tracking import StageError, StageRun, TaskCancelled
from fuxictr_workflow.workflow_log import get_logger

# how often `airflow tasks test` reads the job's new lines (the trigger has its own interval)
FOREGROUND_POLL_S = 1.0
JOB_COMMAND_TIMEOUT_S = 120


def describe_job(found: dict[str, Any], command: str, address: str) -> str | None:
    """The workflow log's line for what `job.py start` found. A job this try started announces
    itself in its own log (the follower delivers that line, even when this process dies before
    it could log anything), so there is nothing to say here."""
    where = f"on {address} (process group {found.get('pgid')})"
    if found.get("started"):
        return None
    if found["state"] == "finished":
        return f"{command} job {where} has already ended (exit {found.get('exit_code')}); taking its result"
    if found["state"] == "starting":
        return f"{command} job on {address} is being started by an earlier try; following it"
    since = ""
    if found.get("started_at") is not None:
        started = datetime.fromtimestamp(float(found["started_at"]), UTC).isoformat(timespec="seconds")
        since = f", started {started}"
    return f"{command} job already running {where}{since}; following it instead of starting another"


def _cancelled(run: StageRun) -> bool:
    return run.logger.store.get_task(run.task_id, with_steps=False)["status"] == TaskStatus.CANCELLED


class FuxiCTRStageOperator(WorkflowStageMixin, SSHOperator):
    """Runs one runner command for the workflow task as a detached job on the training server.

    Short SSHOperator commands (through the server's SSHHook) ship the runner and start its
    job, or find the job a previous try of this stage started: a retry, a cleared task or a
    restarted worker follows that job instead of training twice, and a job that already
    ended well is picked up without training again. The task then defers to
    :class:`RunnerJobTrigger`, which follows the job from the triggerer; under `airflow tasks
    test` the job is followed in the foreground instead.
    """

    command_name: str
    ui_color = "#f8e8c8"
    retry_after_timeout = False

    def runner_args(self, ep: Endpoint, task_id: int, config_dir: str) -> list[str]:
        raise NotImplementedError

    def raise_for_status(self, exit_status: int, stderr: bytes, context: Any = None) -> None:
        if exit_status != 0:  # SSHOperator's own message drops what the command said
            tail = stderr.decode("utf-8", "replace").strip()[-500:]
            raise StageError(f"command on the training server failed with exit {exit_status}: {tail}")

    def execute_stage(self, context: Any, run: StageRun) -> Any:
        cfg = self.workflow_config
        task_id = int(self.workflow_task["id"])
        ti = context["ti"]
        self.ti_ref = (ti.dag_id, ti.run_id, ti.task_id)
        expid = self.workflow_task["experiment_id"]
        server_name = self.workflow_task.get("server") or cfg.default_server
        try:
            ep = endpoint(cfg, server_name)
        except SSHAccessError as err:
            raise StageError(str(err), retryable=False) from None
        server = cfg.server(server_name)
        if not ep.strict_host_key_checking:
            run.warning(HOST_KEY_WARNING.format(host=ep.host, port=ep.port))
        self.ssh_hook = ep.ssh.new_hook()
        # job.py start waits for the job to be recorded: more than SSHHook's 10 s default on a
        # busy server
        self.cmd_timeout = JOB_COMMAND_TIMEOUT_S
        try:
            client = self.get_ssh_client()
        except Exception as err:
            message = f"cannot connect to training server {ep.address}: {type(err).__name__}: {err}"
            raise StageError(message, retryable=not is_refusal(message)) from None
        with client:
            try:
                ep = prepare_remote_root(ep, client)
            except RemoteRootError as err:
                raise StageError(str(err), retryable=False) from None
            bundle = ship_runner(client, ep.remote_root, run.warning)
            config_dir, models = server.fuxictr_config_dir, []
            if config_dir is None:  # the embedded demo's server: the demo's config and models
                demo = ship_demo(client, ep.remote_root, run.warning)
                config_dir = posixpath.join(demo, DEMO_CONFIG_DIR)
                models = ["--demo-models", posixpath.join(demo, DEMO_MODELS)]
            argv = [ep.python, posixpath.join(bundle, "runner.py"), self.command_name, "--expid", expid]
            argv += ["--config-dir", config_dir, *models, *self.runner_args(ep, task_id, config_dir)]
            if server.model_zoo_path:
                argv += ["--model-zoo", server.model_zoo_path]
            if server.gpu is not None:
                argv += ["--gpu", str(server.gpu)]
            self.job_args = {
                "task_id": task_id,
                "step": self.stage.value,
                "command": self.command_name,
                "server": server_name,
                "python": ep.python,
                "job_py": posixpath.join(bundle, "job.py"),
                "job_dir": job_dir(paths.remote_task_dir(ep.remote_root, task_id), self.stage.value),
            }
            job = self._job(lambda command: self.run_ssh_client_command(client, command, context).decode())
            # A step this try found running or failed is this attempt's (a worker died, Airflow
            # retries): a job of it that ended well is the stage's result. Any other status is a
            # new run of the stage (a first run, a cleared task whose later steps were reopened,
            # `airflow tasks test`, an API retry): a finished job there is an earlier attempt's.
            found = job.start(argv, again=self._step_status() not in (StepStatus.RUNNING, StepStatus.FAILED))
            if found["state"] == "failed_to_start":
                # job.py claimed the job dir and forked the job, which did not record itself in
                # time (an overloaded server): the next try finds it running or starts it again
                raise StageError(
                    f"the {self.command_name} job on {ep.address} did not record its start within "
                    f"{found.get('waited_s')} s"
                )
            if found["state"] != "finished" and _cancelled(run):
                # a cancel recorded before this job started could not stop it (cancel_jobs.py)
                job.stop()
                raise TaskCancelled(f"task {task_id} was cancelled; its {self.command_name} job was stopped")
        # the job may run for the stage's execution_timeout from its own start, however many
        # tries follow it; past that its follower stops it (Airflow's own timeout does not
        # reach a deferred task)
        self.job_args["deadline"] = float(found.get("started_at") or time.time()) + (
            cfg.task.execution_timeout(self.stage.value)
        )
        said = describe_job(found, self.command_name, ep.address)
        if said is not None:
            run.info(said)
        in_worker = airflow_runs.in_tasks_test_command() or cfg.task.follow_jobs_from == "worker"
        if found["state"] == "finished" or in_worker:
            # an ended job: one poll logs what no follower logged yet, then the result is taken
            return self._follow_here(context, run, ep)
        return run.suspend(RunnerJobTrigger(**self.job_args))

    def _job(self, run_command: Callable[[str], str]) -> RemoteJob:
        a = self.job_args
        return RemoteJob(run_command, a["python"], a["job_py"], a["job_dir"])

    def _follow_here(self, context: Any, run: StageRun, ep: Endpoint) -> Any:
        """Follow the job from this process to its end (`airflow tasks test`, or a job that has
        already ended)."""
        with ep.paramiko_client() as client:
            follower = JobFollower(
                self._job(run_command(client)),
                run.task_id,
                run.step,
                run.logger,
                RunnerOutput(self.command_name),
                deadline=self.job_args.get("deadline"),
            )
            while not follower.poll():
                time.sleep(FOREGROUND_POLL_S)
        return self.finish_stage(context, run, {**follower.final, "job": self.job_args})

    def finish_stage(self, context: Any, run: StageRun, event: dict[str, Any]) -> dict[str, Any]:
        """The job has ended: its exit code and its final metrics or error line decide."""
        self.job_args = event["job"]  # a resumed task is a new operator object
        state, exit_code = event.get("state"), event.get("exit_code")
        if state == "cancelled":
            raise TaskCancelled(f"task {run.task_id} was cancelled; its {self.command_name} job was stopped")
        if state == "timed_out":
            raise StageError(
                timeout_message(self.workflow_config, self.stage.value)
                + f"; its {self.command_name} job on the training server was stopped",
                retryable=False,
            )
        if state == "lost":
            raise StageError(f"lost the {self.command_name} job on the training server: {event.get('error')}")
        output = self._read_output()
        if exit_code == 0 and output.metrics is not None:
            run.ended_at = ended_at(event)
            run.result.update(output.metrics)
            return output.metrics
        if output.error:
            raise StageError(f"{self.command_name} failed: {output.error}", retryable=False)
        reason = (
            "ended without an exit code (its supervisor was killed)"
            if exit_code is None
            else f"exit {exit_code}"
        )
        if exit_code is not None and exit_code > 128:
            reason = f"killed by signal {exit_code - 128} (exit {exit_code})"
        raise StageError(
            f"{self.command_name} runner {reason}; last output: {output.last_line[-500:] or '(none)'}"
        )

    def _read_output(self) -> RunnerOutput:
        """The job's whole log, read for its metrics or error line (not logged again)."""
        output = RunnerOutput(self.command_name)
        ep = endpoint(self.workflow_config, self.job_args["server"])
        with ep.paramiko_client() as client:
            job, offset, more = self._job(run_command(client)), 0, True
            while more:
                status = job.status(offset)
                output.read(status.get("log", ""))
                offset, more = int(status["offset"]), bool(status.get("more"))
        return output

    def on_stage_timeout(self, run: StageRun) -> None:
        """Out of time while this process followed the job (or before it deferred): stop it."""
        if not hasattr(self, "job_args"):
            return  # no job was started
        ep = endpoint(self.workflow_config, self.job_args["server"])
        with ep.paramiko_client() as client:
            state = self._job(run_command(client)).stop().get("state")
        run.warning(f"{self.command_name} job on the training server stopped after the timeout: {state}")

    def on_kill(self) -> None:
        """Airflow is stopping this task while it runs on a worker (before it deferred, or
        following in the foreground): stop the job's whole process group on the server, and
        close the step of a task instance marked failed."""
        if not hasattr(self, "job_args"):
            return  # killed before a job was started
        logger, task_id = get_logger(), self.job_args["task_id"]
        why: str | None = None
        try:
            why = airflow_stops.why_job_stops(logger, self.ti_ref, task_id)
            if why is None:
                self.log.info(
                    "task instance was cleared: the %s job is left for its next try", self.command_name
                )
                return
            airflow_stops.announce_stop(logger, task_id, self.command_name, why)
            ep = endpoint(get_config(), self.job_args["server"])
            with ep.paramiko_client() as client:
                state = self._job(run_command(client)).stop().get("state")
            self.log.info("stopped the %s job on the training server: %s", self.command_name, state)
            stopped = True
        except Exception as err:  # the link itself may be what failed; the log says so
            self.log.warning("could not stop the %s job on the training server: %s", self.command_name, err)
            stopped = False
        if why is not None:
            airflow_stops.record_mark(logger, task_id, self.command_name, why, stopped)


class TrainOperator(FuxiCTRStageOperator):
    """Stage train: fit the task's FuXiCTR experiment on its uploaded sample data."""

    stage = Stage.TRAIN
    command_name = "train"

    def runner_args(self, ep: Endpoint, task_id: int, config_dir: str) -> list[str]:
        fx = self.workflow_config.fuxictr
        args = [
            "--data-dir",
            paths.remote_dataset_dir(ep.remote_root, task_id, "sample"),
            "--work-dir",
            paths.remote_work_dir(ep.remote_root, task_id),
            "--valid-fraction",
            str(fx.valid_fraction),
        ]
        # without --seed the experiment config's own seed holds
        return args if fx.seed is None else [*args, "--seed", str(fx.seed)]


class InferOperator(FuxiCTRStageOperator):
    """Stage infer: score the task's uploaded inference data with its trained model."""

    stage = Stage.INFER
    command_name = "infer"

    def runner_args(self, ep: Endpoint, task_id: int, config_dir: str) -> list[str]:
        fx = self.workflow_config.fuxictr
        return [
            "--data-dir",
            paths.remote_dataset_dir(ep.remote_root, task_id, "infer"),
            "--work-dir",
            paths.remote_work_dir(ep.remote_root, task_id),
            "--output",
            paths.remote_predictions(ep.remote_root, task_id),
            "--batch-size",
            str(fx.infer_batch_size),
            "--id-columns",
            *fx.id_columns,
        ]
