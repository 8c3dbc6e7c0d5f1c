"""Stages data_upload and result_download: thin operators over the transfer engine.

The engine (fuxictr_workflow.transfer) does the work; these operators pick the server and
the paths of the workflow task (paths.py layout unless given), log progress lines in the
workflow log and put the transfer's figures in the step result.

    ChunkedUploadOperator(task_id="data_upload")         HDFS export → staging → server data dirs
    ChunkedDownloadOperator(task_id="result_download")   server predictions → staging → HDFS results/

With the task layout, the HDFS legs are the hand-off between stages (handoff.py), so each
stage may run on a different worker; with explicit paths the operator moves only those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from fuxictr_workflow.domain import paths
from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.domain.stages import Stage
from fuxictr_workflow.files import handoff
from fuxictr_workflow.files.private_files import make_private_dir
from fuxictr_workflow.orchestration.operators.base import WorkflowStageMixin
from fuxictr_workflow.ssh.servers import (
    Endpoint,
    RemoteRootError,
    SSHAccessError,
    endpoint,
    with_prepared_root,
)
from fuxictr_workflow.ssh.ssh_access import is_refusal
from fuxictr_workflow.tracking import StageError, StageRun
from fuxictr_workflow.transfer import TransferError, TransferItem, transfer

STAGE_OF = {"upload": Stage.DATA_UPLOAD, "download": Stage.RESULT_DOWNLOAD}


def default_items(direction: str, cfg: WorkflowConfig, task_id: int, remote_root: str) -> list[TransferItem]:
    """The paths.py layout: datasets up for data_upload, predictions down for result_download."""
    staging = cfg.storage.staging_dir
    if direction == "upload":
        return [
            TransferItem(
                str(paths.staging_dataset_dir(staging, task_id, ds)),
                paths.remote_dataset_dir(remote_root, task_id, ds),
            )
            for ds in paths.DATASETS
        ]
    return [
        TransferItem(
            paths.remote_predictions(remote_root, task_id),
            str(paths.staging_predictions(staging, task_id)),
        )
    ]


class ChunkedTransferOperator(WorkflowStageMixin, BaseOperator):
    """Chunked, parallel, verified, resumable transfer for one workflow task.

    direction: "upload" (stage data_upload) or "download" (stage result_download).
    local_paths / remote_paths: templated, pairwise (source → destination for the
    direction); default: the task's paths.py layout. They must stay under
    storage.staging_dir and the server's remote_root.
    server: templated config server name; default: the task's server, else the config default.
    transport: "auto" (OpenSSH's ssh when installed, else paramiko), "openssh" or "paramiko".
    """

    template_fields: Sequence[str] = ("local_paths", "remote_paths", "server")
    ui_color = "#d8e8f8"

    def __init__(
        self,
        *,
        direction: str,
        local_paths: list[str] | None = None,
        remote_paths: list[str] | None = None,
        server: str | None = None,
        transport: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if direction not in STAGE_OF:
            raise ValueError(f"direction must be 'upload' or 'download', got {direction!r}")
        if (local_paths is None) != (remote_paths is None):
            raise ValueError("give both local_paths and remote_paths, or neither (task layout)")
        self.direction = direction
        self.stage = STAGE_OF[direction]
        self.local_paths = local_paths
        self.remote_paths = remote_paths
        self.server = server
        self.transport = transport

    def server_name(self) -> str | None:
        return self.server or self.workflow_task.get("server") or self.workflow_config.default_server

    def transfer_items(self, cfg: WorkflowConfig, task_id: int, ep: Endpoint) -> list[TransferItem]:
        if self.local_paths is None or self.remote_paths is None:
            return default_items(self.direction, cfg, task_id, ep.remote_root)
        if len(self.local_paths) != len(self.remote_paths):
            raise StageError("local_paths and remote_paths must have the same length", retryable=False)
        pairs = zip(self.local_paths, self.remote_paths, strict=True)
        if self.direction == "upload":
            return [TransferItem(local, remote) for local, remote in pairs]
        return [TransferItem(remote, local) for local, remote in pairs]

    def execute_stage(self, context: Any, run: StageRun) -> dict[str, Any]:
        cfg = self.workflow_config
        task_id = int(self.workflow_task["id"])
        task_layout = self.local_paths is None
        if task_layout and self.direction == "upload":
            handoff.stage_datasets(cfg, self.workflow_task, run.info)
        try:
            ep = endpoint(cfg, self.server_name())
        except KeyError as err:
            raise StageError(f"server: {err.args[0]}", retryable=False) from None
        except SSHAccessError as err:
            raise StageError(str(err), retryable=False) from None
        try:
            ep = with_prepared_root(ep)
        except RemoteRootError as err:
            raise StageError(str(err), retryable=False) from None
        except Exception as err:
            run.check_cancelled()
            message = f"cannot prepare remote_root on {ep.address}: {type(err).__name__}: {err}"
            raise StageError(message, retryable=not is_refusal(message)) from None
        items = self.transfer_items(cfg, task_id, ep)
        make_private_dir(cfg.storage.staging_dir)
        try:
            result = transfer(
                self.direction,
                ep,
                items,
                cfg=cfg.transfer,
                store=run.logger.store,
                task_id=task_id,
                step=self.stage.value,
                local_root=cfg.storage.staging_dir,
                remote_root=ep.remote_root,
                log=run,
                progress=lambda p: run.info(f"{self.direction}: {p.line()}"),
                transport=self.transport,
                cancelled=run.cancelled.is_set,
            )
        except TransferError as err:
            run.check_cancelled()
            raise StageError(str(err), retryable=err.retryable) from err
        run.result.update(result.as_dict())
        run.info(
            f"{self.direction} done: {result.files} files, {result.bytes / 1e6:,.1f} MB in {result.seconds:.1f}s "
            f"({result.mb_per_s:.1f} MB/s); chunks sent {result.chunks_sent}, "
            f"skipped {result.chunks_skipped}, retried {result.chunks_retried}"
        )
        if task_layout and self.direction == "download":
            handoff.publish_predictions(cfg, self.workflow_task, run.info)
        return result.as_dict()


class ChunkedUploadOperator(ChunkedTransferOperator):
    """Stage data_upload: staging sample/ and infer/ → the server's data dirs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(direction="upload", **kwargs)


class ChunkedDownloadOperator(ChunkedTransferOperator):
    """Stage result_download: the server's predictions → staging."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(direction="download", **kwargs)
