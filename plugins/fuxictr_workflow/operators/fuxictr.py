"""Stages train and infer: remote/runner.py on the training server over SSH.

The runner (and, when the server has no FuXiCTR config dir of its own, the demo config and
model) is shipped to ``<remote_root>/.runner/<sha256>/`` — content-addressed, so a stale copy
is never used and concurrent tasks share one copy safely. Its JSON lines are streamed into
the workflow log as they arrive; the final metrics become the step result and the XCom.

    TrainOperator(task_id="train", pool=...)
    InferOperator(task_id="infer", pool=...)
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shlex
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from fuxictr_workflow import paths
from fuxictr_workflow.operators.base import WorkflowStageMixin
from fuxictr_workflow.servers import HOST_KEY_WARNING, Endpoint, endpoint
from fuxictr_workflow.stages import Stage
from fuxictr_workflow.tracking import StageError, StageRun
from fuxictr_workflow.validation import validate_experiment_id

REMOTE_DIR = Path(__file__).resolve().parents[1] / "remote"
SHIPPED = [
    "runner.py",
    "streaming.py",
    "model_lookup.py",
    "errors.py",
    "demo_models.py",
    "demo_config/model_config.yaml",
    "demo_config/dataset_config.yaml",
]


def bundle_digest() -> str:
    h = hashlib.sha256()
    for name in SHIPPED:
        h.update(name.encode() + b"\0" + (REMOTE_DIR / name).read_bytes())
    return h.hexdigest()[:16]


def ship_runner(client: Any, remote_root: str) -> str:
    """Copy the runner bundle to the server unless that exact version is there; returns its dir."""
    target = posixpath.join(remote_root, ".runner", bundle_digest())
    sftp = client.open_sftp()
    try:
        try:
            sftp.stat(posixpath.join(target, ".complete"))
            return target
        except FileNotFoundError:
            pass
        staging = f"{target}.tmp.{id(client)}"
        for name in SHIPPED:
            _mkdirs(sftp, posixpath.dirname(posixpath.join(staging, name)))
            sftp.put(str(REMOTE_DIR / name), posixpath.join(staging, name))
        with sftp.open(posixpath.join(staging, ".complete"), "w") as f:
            f.write(bundle_digest())
        try:
            sftp.posix_rename(staging, target)
        except OSError:  # another task shipped the same version first
            _exec(client, f"rm -rf {shlex.quote(staging)}")
        return target
    finally:
        sftp.close()


def _mkdirs(sftp: Any, path: str) -> None:
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        sub = "/" + "/".join(parts[:i])
        try:
            sftp.stat(sub)
        except FileNotFoundError:
            sftp.mkdir(sub)


def _exec(client: Any, command: str) -> int:
    _stdin, stdout, _stderr = client.exec_command(command)
    return stdout.channel.recv_exit_status()


class FuxiCTRStageOperator(WorkflowStageMixin, BaseOperator):
    """Runs one runner command for the workflow task and streams its output."""

    command: str
    ui_color = "#f8e8c8"

    def runner_args(self, ep: Endpoint, task_id: int, config_dir: str) -> list[str]:
        raise NotImplementedError

    def execute_stage(self, context: Any, run: StageRun) -> dict[str, Any]:
        cfg = self.workflow_config
        task_id = int(self.workflow_task["id"])
        expid = validate_experiment_id(self.workflow_task["experiment_id"])
        server_name = self.workflow_task.get("server") or cfg.default_server
        ep = endpoint(cfg, server_name)
        server = cfg.server(server_name)
        if not ep.strict_host_key_checking:
            run.warning(HOST_KEY_WARNING.format(host=ep.host, port=ep.port))
        try:
            client = ep.paramiko_client()
        except Exception as err:
            raise StageError(f"cannot connect to training server {ep.host}:{ep.port}: {err}") from err
        try:
            bundle = ship_runner(client, ep.remote_root)
            config_dir = server.fuxictr_config_dir or posixpath.join(bundle, "demo_config")
            args = [ep.python, posixpath.join(bundle, "runner.py"), self.command, "--expid", expid]
            args += ["--config-dir", config_dir, *self.runner_args(ep, task_id, config_dir)]
            if server.model_zoo_path:
                args += ["--model-zoo", server.model_zoo_path]
            if server.gpu is not None:
                args += ["--gpu", str(server.gpu)]
            command = " ".join(shlex.quote(a) for a in args)
            run.info(f"{self.command} on {ep.address}: {command}")
            return self._stream(client, command, run)
        finally:
            client.close()

    def _stream(self, client: Any, command: str, run: StageRun) -> dict[str, Any]:
        """Log each runner line as it arrives; the metrics line is the result."""
        _stdin, stdout, _stderr = client.exec_command(f"exec {command} 2>&1", get_pty=False)
        metrics: dict[str, Any] | None = None
        error: str | None = None
        last_line = ""
        for raw in iter(stdout.readline, ""):
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            last_line = line
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                run.log("DEBUG", line[:2000])
                continue
            kind = event.pop("event", None)
            if kind == "progress":
                metric = ", ".join(f"{k} {v:.4f}" for k, v in event.get("metric", {}).items())
                run.info(f"epoch {event['epoch']} step {event['step']}: loss {event['loss']:.4f}, {metric}")
            elif kind == "metrics":
                metrics = event
                run.info(f"{self.command} metrics: " + ", ".join(f"{k}={v}" for k, v in event.items()))
            elif kind == "error":
                error = event["error"]
                run.error(error)
        status = stdout.channel.recv_exit_status()
        if status != 0 or metrics is None:
            if error:
                raise StageError(f"{self.command} failed: {error}", retryable=False)
            reason = f"killed by signal (exit {status})" if status < 0 or status > 128 else f"exit {status}"
            raise StageError(f"{self.command} runner {reason}; last output: {last_line[-500:] or '(none)'}")
        run.result.update(metrics)
        return metrics


class TrainOperator(FuxiCTRStageOperator):
    """Stage train: fit the task's FuXiCTR experiment on its uploaded sample data."""

    stage = Stage.TRAIN
    command = "train"

    def runner_args(self, ep: Endpoint, task_id: int, config_dir: str) -> list[str]:
        fx = self.workflow_config.fuxictr
        return [
            "--data-dir",
            paths.remote_dataset_dir(ep.remote_root, task_id, "sample"),
            "--work-dir",
            paths.remote_work_dir(ep.remote_root, task_id),
            "--valid-fraction",
            str(fx.valid_fraction),
            "--seed",
            str(fx.seed),
        ]


class InferOperator(FuxiCTRStageOperator):
    """Stage infer: score the task's uploaded inference data with its trained model."""

    stage = Stage.INFER
    command = "infer"

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
