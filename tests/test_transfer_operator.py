"""The transfer operators: path defaults from paths.py, and a tracked run through the mixin."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fuxictr_workflow.domain import paths
from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.domain.stages import Stage, StepStatus
from fuxictr_workflow.orchestration.operators.transfer import (
    ChunkedDownloadOperator,
    ChunkedTransferOperator,
    ChunkedUploadOperator,
    default_items,
)
from fuxictr_workflow.store import get_store
from fuxictr_workflow.transfer import TransferItem
from scripts.sshd import SshdInfo
from tests.conftest import new_task
from tests.stage_runs import DAG_ID, bind_run
from tests.transfer_helpers import CHUNK, tree_hashes

pytestmark = pytest.mark.timeout(60)

TRANSFER = {"chunk_size": CHUNK, "parallel_workers": 2, "retry_backoff_s": 0.01, "progress_interval_s": 0.05}


def test_default_paths_follow_the_task_layout(make_config: Callable[..., WorkflowConfig]) -> None:
    cfg = make_config()
    staging, remote = cfg.storage.staging_dir, "/srv/fx"
    assert default_items("upload", cfg, 7, remote) == [
        TransferItem(f"{staging}/task_7/sample", "/srv/fx/task_7/data/sample"),
        TransferItem(f"{staging}/task_7/infer", "/srv/fx/task_7/data/infer"),
    ]
    assert default_items("download", cfg, 7, remote) == [
        TransferItem(
            "/srv/fx/task_7/output/predictions.parquet", f"{staging}/task_7/predictions/predictions.parquet"
        )
    ]


def test_operator_construction() -> None:
    up = ChunkedUploadOperator(task_id="data_upload")
    down = ChunkedDownloadOperator(task_id="result_download", server="local")
    assert (up.stage, up.direction) == (Stage.DATA_UPLOAD, "upload")
    assert (down.stage, down.direction, down.server) == (Stage.RESULT_DOWNLOAD, "download", "local")
    assert set(ChunkedTransferOperator.template_fields) == {"local_paths", "remote_paths", "server"}
    with pytest.raises(ValueError, match="direction"):
        ChunkedTransferOperator(task_id="x", direction="sideways")
    with pytest.raises(ValueError, match="both"):
        ChunkedUploadOperator(task_id="x", local_paths=["/a"])


def _context(task_id: int) -> dict[str, Any]:
    """A run the API started for the task (bound to it in the configured store)."""
    bind_run(task_id, "manual__1")
    return {
        "dag_run": SimpleNamespace(conf={"task_id": task_id}, run_id="manual__1", dag_id=DAG_ID),
        "params": {},
        "ti": SimpleNamespace(try_number=1),
    }


def write_export(hdfs_root: Path, task_id: int) -> None:
    """What data_fetch's Hive export leaves on HDFS: Parquet parts of incompressible bytes."""
    for ds in paths.DATASETS:
        part_dir = Path(paths.hdfs_task_dir(str(hdfs_root), task_id, ds))
        part_dir.mkdir(parents=True)
        for i in range(2):
            table = pa.table({"payload": [os.urandom(CHUNK * 2 + i * 1000)]})
            pq.write_table(table, part_dir / f"part-{i}.parquet", compression="none")


def chunks_of(root: Path) -> int:
    return sum(math.ceil(f.stat().st_size / CHUNK) for f in root.rglob("*") if f.is_file())


def test_upload_then_download_through_the_stage_mixin(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo, tmp_path: Path
) -> None:
    """The task layout with HDFS as the hand-off: data_upload sends what Hive exported to HDFS,
    result_download leaves the predictions on HDFS for hive_upload."""
    cfg = make_config(sshd, transfer=TRANSFER)
    store = get_store(cfg.store.url)
    hdfs_root = tmp_path / "hdfs"
    task_id = new_task(store, server="local", hdfs_path=str(hdfs_root))
    staging, remote_root = cfg.storage.staging_dir, cfg.server("local").remote_root
    write_export(hdfs_root, task_id)

    up = ChunkedUploadOperator(task_id="data_upload").execute(_context(task_id))

    for ds in paths.DATASETS:
        assert tree_hashes(Path(paths.remote_dataset_dir(remote_root, task_id, ds))) == tree_hashes(
            Path(paths.hdfs_task_dir(str(hdfs_root), task_id, ds))
        )
    expected_chunks = chunks_of(hdfs_root / f"task_{task_id}")
    assert up["files"] == 4 and up["chunks_sent"] == expected_chunks
    step = {s["step_name"]: s for s in store.get_task(task_id)["steps"]}["data_upload"]
    assert step["status"] == StepStatus.COMPLETED
    assert store.step_result(task_id, "data_upload")["bytes"] == up["bytes"]
    messages = [e["message"] for e in store.logs_after(task_id)]
    assert any("upload: 100.0%" in m and "MB/s" in m and "ETA" in m for m in messages)
    assert any(m.startswith("sample: 2 files") and "copied from" in m for m in messages)

    predictions = Path(paths.remote_predictions(remote_root, task_id))
    predictions.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": list(range(1000)), "score": [i / 1000 for i in range(1000)]}), predictions)

    down = ChunkedDownloadOperator(task_id="result_download").execute(_context(task_id))

    local = paths.staging_predictions(staging, task_id)
    assert local.read_bytes() == predictions.read_bytes()
    assert Path(paths.hdfs_results(str(hdfs_root), task_id)).read_bytes() == predictions.read_bytes()
    assert down["files"] == 1 and down["direction"] == "download"
    assert store.chunk_progress(task_id)["result_download"]["chunks_verified"] == chunks_of(
        predictions.parent
    )


def test_a_worker_without_the_staged_copy_fetches_it_and_resends_no_verified_chunk(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo, tmp_path: Path
) -> None:
    """data_upload retried on another worker (its staging never saw the task): it copies the
    export from HDFS, and its copy looks to the resume check like the first worker's, so the
    chunks the first attempt verified on the server are skipped, not sent again."""
    cfg = make_config(sshd, transfer=TRANSFER)
    store = get_store(cfg.store.url)
    hdfs_root = tmp_path / "hdfs"
    task_id = new_task(store, server="local", hdfs_path=str(hdfs_root))
    write_export(hdfs_root, task_id)
    first = ChunkedUploadOperator(task_id="data_upload").execute(_context(task_id))
    shutil.rmtree(paths.staging_task_dir(cfg.storage.staging_dir, task_id))

    again = ChunkedUploadOperator(task_id="data_upload").execute(_context(task_id))

    assert first["chunks_sent"] == chunks_of(hdfs_root / f"task_{task_id}") > 0
    assert (again["chunks_sent"], again["chunks_skipped"]) == (0, first["chunks_sent"])
    messages = [e["message"] for e in store.logs_after(task_id)]
    assert sum("copied from" in m for m in messages) == 2 * len(paths.DATASETS)
    assert not any("changed since the last attempt" in m for m in messages)

    third = ChunkedUploadOperator(task_id="data_upload").execute(_context(task_id))
    assert third["chunks_sent"] == 0
    cached = [e["message"] for e in store.logs_after(task_id)][len(messages) :]
    assert sum("staged copy is current" in m for m in cached) == len(paths.DATASETS)


def test_a_missing_export_fails_the_step_with_a_clear_reason(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo, tmp_path: Path
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    cfg = make_config(sshd, transfer=TRANSFER)
    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local", hdfs_path=str(tmp_path / "hdfs"))
    with pytest.raises(AirflowFailException, match="did the Hive export run"):
        ChunkedUploadOperator(task_id="data_upload").execute(_context(task_id))
    step = {s["step_name"]: s for s in store.get_task(task_id)["steps"]}["data_upload"]
    assert step["status"] == StepStatus.FAILED and step["error_message"].startswith("sample: ")
