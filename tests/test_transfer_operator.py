"""The transfer operators: path defaults from paths.py, and a tracked run through the mixin."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fuxictr_workflow import paths
from fuxictr_workflow.config import WorkflowConfig
from fuxictr_workflow.operators.transfer import (
    ChunkedDownloadOperator,
    ChunkedTransferOperator,
    ChunkedUploadOperator,
    default_items,
)
from fuxictr_workflow.stages import Stage, StepStatus
from fuxictr_workflow.store import get_store
from fuxictr_workflow.transfer import TransferItem
from scripts.sshd import SshdInfo
from tests.conftest import new_task
from tests.transfer_helpers import CHUNK, tree_hashes, write_random

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
    return {
        "dag_run": SimpleNamespace(conf={"task_id": task_id}, run_id="manual__1"),
        "params": {},
        "ti": SimpleNamespace(try_number=1),
    }


def test_upload_then_download_through_the_stage_mixin(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo
) -> None:
    cfg = make_config(sshd, transfer=TRANSFER)
    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local")
    staging, remote_root = cfg.storage.staging_dir, cfg.server("local").remote_root
    for ds in paths.DATASETS:
        for i in range(2):
            write_random(paths.staging_dataset_dir(staging, task_id, ds) / f"part-{i}.parquet", CHUNK * 2 + i)

    up = ChunkedUploadOperator(task_id="data_upload").execute(_context(task_id))

    for ds in paths.DATASETS:
        assert tree_hashes(Path(paths.remote_dataset_dir(remote_root, task_id, ds))) == tree_hashes(
            paths.staging_dataset_dir(staging, task_id, ds)
        )
    assert up["files"] == 4 and up["chunks_sent"] == 10
    step = {s["step_name"]: s for s in store.get_task(task_id)["steps"]}["data_upload"]
    assert step["status"] == StepStatus.COMPLETED
    assert store.step_result(task_id, "data_upload")["bytes"] == up["bytes"]
    messages = [e["message"] for e in store.logs_after(task_id)]
    assert any("upload: 100.0%" in m and "MB/s" in m and "ETA" in m and "chunks 10/10" in m for m in messages)

    predictions = Path(paths.remote_predictions(remote_root, task_id))
    write_random(predictions, CHUNK * 3 + 11)

    down = ChunkedDownloadOperator(task_id="result_download").execute(_context(task_id))

    local = paths.staging_predictions(staging, task_id)
    assert local.read_bytes() == predictions.read_bytes()
    assert down["files"] == 1 and down["direction"] == "download"
    assert store.chunk_progress(task_id)["result_download"]["chunks_verified"] == 4


def test_missing_staging_data_fails_the_step_with_a_clear_reason(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    cfg = make_config(sshd, transfer=TRANSFER)
    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local")
    with pytest.raises(AirflowFailException, match="does not exist"):
        ChunkedUploadOperator(task_id="data_upload").execute(_context(task_id))
    step = {s["step_name"]: s for s in store.get_task(task_id)["steps"]}["data_upload"]
    assert step["status"] == StepStatus.FAILED and "sample" in step["error_message"]
