"""What passes between stages, and where it lies: any stage may run on any worker.

A Celery worker, a Kubernetes pod or `airflow tasks test` on another host sees none of the
files an earlier stage left on its own disk. So a stage's output that a later stage reads
goes to HDFS (the task's <hdfs_path>, paths.py), which every worker reaches:

    data_fetch       Hive exports sample/ and infer/ to HDFS      (the export is the hand-off)
    data_upload      HDFS → this worker's staging → training server
    result_download  training server → staging → HDFS results/    (the file is the hand-off)
    hive_upload      HDFS results/ → HDFS predictions/ → Hive      (no local file needed)

A worker's staging dir is only a cache: data_upload uses it when it still holds the same
files as HDFS (hdfs.is_current), which on one machine saves the second copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fuxictr_workflow.domain import paths
from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.files import hdfs
from fuxictr_workflow.files.private_files import make_private_dir
from fuxictr_workflow.tracking import StageError


def stage_datasets(cfg: WorkflowConfig, task: dict[str, Any], log: Callable[[str], None]) -> dict[str, int]:
    """This worker's staging made a current copy of the task's exported datasets."""
    result: dict[str, int] = {}
    check_export_size(cfg, task)
    make_private_dir(cfg.storage.staging_dir)
    for name in paths.DATASETS:
        url = paths.hdfs_task_dir(task["hdfs_path"], task["id"], name)
        local = paths.staging_dataset_dir(cfg.storage.staging_dir, task["id"], name)
        try:
            copied, cached = hdfs.sync_dir(url, local, cfg.hdfs.storage_options)
        except FileNotFoundError as err:
            # the export is data_fetch's output: retrying this stage cannot bring it back
            raise StageError(f"{name}: {err}", retryable=False) from None
        if copied.files == 0:
            raise StageError(f"{name}_sql exported no files to {url}", retryable=False)
        result.update(
            {f"{name}_files": copied.files, f"{name}_bytes": copied.bytes, f"{name}_rows": copied.rows}
        )
        source = "this worker's staged copy is current" if cached else f"copied from {url}"
        log(f"{name}: {copied.files} files, {copied.bytes:,} bytes, {copied.rows:,} rows; {source}")
    return result


def export_sizes(cfg: WorkflowConfig, task: dict[str, Any]) -> dict[str, int]:
    """Bytes of each dataset's data files as Hive wrote them under the task's hdfs_path."""
    sizes = {}
    for name in paths.DATASETS:
        url = paths.hdfs_task_dir(task["hdfs_path"], task["id"], name)
        try:
            _, listing = hdfs.data_files(url, cfg.hdfs.storage_options)
        except FileNotFoundError as err:
            raise StageError(f"{name}: {err}", retryable=False) from None
        sizes[name] = sum(int(i["size"]) for i in listing)
    return sizes


def check_export_size(cfg: WorkflowConfig, task: dict[str, Any]) -> None:
    """Refuse an export over storage.max_export_bytes before a byte of it is copied: it would
    fill this worker's staging and the training server's disk."""
    cap = cfg.storage.max_export_bytes
    if cap is None:
        return
    sizes = export_sizes(cfg, task)
    total = sum(sizes.values())
    if total > cap:
        parts = ", ".join(f"{name} {size:,}" for name, size in sizes.items())
        raise StageError(
            f"the export is {total:,} bytes on HDFS ({parts}), over storage.max_export_bytes "
            f"({cap:,} bytes): select fewer rows or columns in sample_sql/infer_sql, or raise the cap",
            retryable=False,
        )


def publish_predictions(
    cfg: WorkflowConfig, task: dict[str, Any], log: Callable[[str], None]
) -> dict[str, int]:
    """The predictions this worker downloaded → HDFS results/, where hive_upload reads them."""
    local = paths.staging_predictions(cfg.storage.staging_dir, task["id"])
    url = paths.hdfs_task_dir(task["hdfs_path"], task["id"], "results")
    copied = hdfs.upload_file(local, url, cfg.hdfs.storage_options)
    log(f"predictions: {copied.bytes:,} bytes, {copied.rows:,} rows to {url}")
    return {"rows": copied.rows, "bytes": copied.bytes}


def results_url(task: dict[str, Any]) -> str:
    return paths.hdfs_results(task["hdfs_path"], task["id"])
