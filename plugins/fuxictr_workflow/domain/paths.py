"""Where each task's files live: HDFS, the worker's staging cache and the training server.

One place for the layout so stages agree on it:

    HDFS     <hdfs_path>/task_<id>/{sample,infer}/                 (Hive's export: the stages' input)
             <hdfs_path>/task_<id>/results/predictions.parquet     (result_download's output)
             <hdfs_path>/task_<id>/predictions/                     (what hive_upload loads; Hive moves it)
    staging  <storage.staging_dir>/task_<id>/{sample,infer}/        (this worker's copy of the export)
             <storage.staging_dir>/task_<id>/predictions/predictions.parquet
    server   <remote_root>/task_<id>/data/{sample,infer}/
             <remote_root>/task_<id>/work/                         (checkpoint, feature processor)
             <remote_root>/task_<id>/output/predictions.parquet
"""

from __future__ import annotations

import posixpath
from pathlib import Path

DATASETS = ("sample", "infer")
PREDICTIONS_FILE = "predictions.parquet"


def task_dirname(task_id: int) -> str:
    return f"task_{int(task_id)}"


def staging_task_dir(staging_dir: str, task_id: int) -> Path:
    return Path(staging_dir) / task_dirname(task_id)


def staging_dataset_dir(staging_dir: str, task_id: int, dataset: str) -> Path:
    assert dataset in DATASETS, dataset
    return staging_task_dir(staging_dir, task_id) / dataset


def staging_predictions(staging_dir: str, task_id: int) -> Path:
    return staging_task_dir(staging_dir, task_id) / "predictions" / PREDICTIONS_FILE


def hdfs_task_dir(hdfs_path: str, task_id: int, leaf: str) -> str:
    assert leaf in (*DATASETS, "results", "predictions"), leaf
    return f"{hdfs_path.rstrip('/')}/{task_dirname(task_id)}/{leaf}"


def hdfs_results(hdfs_path: str, task_id: int) -> str:
    return f"{hdfs_task_dir(hdfs_path, task_id, 'results')}/{PREDICTIONS_FILE}"


def remote_task_dir(remote_root: str, task_id: int) -> str:
    return posixpath.join(remote_root, task_dirname(task_id))


def remote_dataset_dir(remote_root: str, task_id: int, dataset: str) -> str:
    assert dataset in DATASETS, dataset
    return posixpath.join(remote_task_dir(remote_root, task_id), "data", dataset)


def remote_work_dir(remote_root: str, task_id: int) -> str:
    return posixpath.join(remote_task_dir(remote_root, task_id), "work")


def remote_predictions(remote_root: str, task_id: int) -> str:
    return posixpath.join(remote_task_dir(remote_root, task_id), "output", PREDICTIONS_FILE)
