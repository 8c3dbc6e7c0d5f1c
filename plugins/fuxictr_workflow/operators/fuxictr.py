"""Stages train and infer: remote/runner.py on the training server over SSH.

The runner (and, when the server has no FuXiCTR config dir of its own, the demo config and
model) is shipped to ``<remote_root>/.runner/<sha256>/`` — content-addressed, so a stale copy
is never used and concurrent tasks share one copy safely. Before each run every file there is
read back and compared with the shipped bytes; a copy that differs is replaced, never run. Its JSON lines are streamed into
the workflow log as they arrive; the final metrics become the step result and the XCom.

    TrainOperator(task_id="train", pool=...)
    InferOperator(task_id="infer", pool=...)
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shlex
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from fuxictr_workflow import paths
from fuxictr_workflow.operators.base import WorkflowStageMixin
from fuxictr_workflow.servers import (
    HOST_KEY_WARNING,
    Endpoint,
    RemoteRootError,
    SSHAccessError,
    endpoint,
    prepare_remote_root,
)
from fuxictr_workflow.ssh_access import is_refusal
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


def bundle_files() -> dict[str, bytes]:
    return {name: (REMOTE_DIR / name).read_bytes() for name in SHIPPED}


def bundle_digest() -> str:
    h = hashlib.sha256()
    for name, data in bundle_files().items():
        h.update(name.encode() + b"\0" + data)
    return h.hexdigest()[:16]


def bundle_problem(sftp: Any, target: str, files: dict[str, bytes]) -> str | None:
    """Why the bundle at `target` is not exactly `files` (None: it is).

    Each file is read back and hashed: a marker file would only say a copy was once
    finished, not that nobody changed it since. Symlinks are refused, not followed."""
    for rel in sorted({posixpath.dirname(n) for n in files} | {""}):
        where = posixpath.join(target, rel) if rel else target
        try:
            mode = sftp.lstat(where).st_mode
        except FileNotFoundError:
            return "missing"
        if not stat.S_ISDIR(mode):
            return f"{where} is not a directory"
    for name, data in files.items():
        path = posixpath.join(target, name)
        try:
            mode = sftp.lstat(path).st_mode
        except FileNotFoundError:
            return f"{name} is missing"
        if not stat.S_ISREG(mode):
            return f"{name} is not a regular file"
        with sftp.open(path, "rb") as f:
            there = f.read()
        if hashlib.sha256(there).digest() != hashlib.sha256(data).digest():
            return f"{name} differs from the shipped version"
    return None


def ship_runner(client: Any, remote_root: str, warn: Callable[[str], None] = lambda _: None) -> str:
    """Copy the runner bundle to the server unless that exact version is there; returns its dir.

    What is there is verified file by file before every run; a changed copy is replaced."""
    files = bundle_files()
    target = posixpath.join(remote_root, ".runner", bundle_digest())
    sftp = client.open_sftp()
    try:
        problem = bundle_problem(sftp, target, files)
        if problem is None:
            return target
        if problem != "missing":
            warn(f"runner bundle {target} on the server is not the shipped one ({problem}); replacing it")
            _exec(client, f"rm -rf {shlex.quote(target)}")
        staging = f"{target}.tmp.{os.getpid()}.{id(client)}"
        for name, data in files.items():
            _mkdirs(sftp, posixpath.dirname(posixpath.join(staging, name)))
            with sftp.open(posixpath.join(staging, name), "wb") as f:
                f.write(data)
        try:
            sftp.posix_rename(staging, target)
        except OSError:  # another task shipped the same version first
            _exec(client, f"rm -rf {shlex.quote(staging)}")
        problem = bundle_problem(sftp, target, files)
        if problem is not None:
            raise StageError(
                f"runner bundle {target} on the server cannot be verified after shipping: {problem}"
            )
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
        try:
            ep = endpoint(cfg, server_name)
        except SSHAccessError as err:
            raise StageError(str(err), retryable=False) from None
        server = cfg.server(server_name)
        if not ep.strict_host_key_checking:
            run.warning(HOST_KEY_WARNING.format(host=ep.host, port=ep.port))
        try:
            client = ep.paramiko_client()
        except Exception as err:
            message = f"cannot connect to training server {ep.address}: {type(err).__name__}: {err}"
            raise StageError(message, retryable=not is_refusal(message)) from None
        try:
            try:
                ep = prepare_remote_root(ep, client)
            except RemoteRootError as err:
                raise StageError(str(err), retryable=False) from None
            bundle = ship_runner(client, ep.remote_root, run.warning)
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
        """Log each runner line as it arrives; the metrics line is the result.

        sshd starts the command in a session of its own, so the shell's pid, which the runner
        inherits through ``exec``, is also its process group: the first line reports it for
        :meth:`on_kill`."""
        _stdin, stdout, _stderr = client.exec_command(f"echo $$; exec {command} 2>&1", get_pty=False)
        first = stdout.readline().strip()
        if first.isdigit() and int(first) > 1:
            self._runner = (client, int(first))
            run.info(f"{self.command} runner started on the training server as process group {first}")
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

    def on_kill(self) -> None:
        """Airflow is stopping this task (a cancelled task, a timeout): stop the runner's whole
        process group on the training server, which would otherwise train on unattended. CONT
        after TERM, as a shell does for its jobs, so a stopped runner ends too."""
        runner = getattr(self, "_runner", None)
        if runner is None:
            return
        client, pgid = runner
        try:
            status = _exec(client, f"kill -TERM -- -{pgid}; kill -CONT -- -{pgid}")
        except Exception as err:  # the link itself may be what failed; the log says so
            self.log.warning("could not stop runner process group %s on the training server: %s", pgid, err)
            return
        self.log.info("sent TERM to runner process group %s on the training server (exit %s)", pgid, status)


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
