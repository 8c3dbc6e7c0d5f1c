"""Stages train and infer: the runner shipped to a real sshd and real FuXiCTR training."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest

from fuxictr_workflow import paths
from fuxictr_workflow.config import WorkflowConfig
from fuxictr_workflow.operators.fuxictr import InferOperator, TrainOperator
from fuxictr_workflow.stages import StepStatus
from fuxictr_workflow.store import WorkflowStore, get_store
from fuxictr_workflow.synthetic import make_ctr_table, write_parquet_parts
from scripts.sshd import SshdInfo
from tests.conftest import new_task

pytestmark = pytest.mark.timeout(600)

SAMPLE_ROWS, INFER_ROWS = 6000, 2000


def context(task_id: int) -> dict[str, Any]:
    return {
        "dag_run": SimpleNamespace(conf={"task_id": task_id}, run_id=f"manual__{task_id}"),
        "params": {},
        "ti": SimpleNamespace(try_number=1),
    }


def stage_data(cfg: WorkflowConfig, task_id: int, sample: Any = None, infer: Any = None) -> None:
    """Put Parquet data where data_upload leaves it on the server (same machine here)."""
    root = cfg.server("local").remote_root
    write_parquet_parts(
        sample if sample is not None else make_ctr_table(SAMPLE_ROWS, seed=1),
        paths.remote_dataset_dir(root, task_id, "sample"),
    )
    write_parquet_parts(
        infer if infer is not None else make_ctr_table(INFER_ROWS, seed=2, with_label=False, id_start=10**6),
        paths.remote_dataset_dir(root, task_id, "infer"),
    )


def step(store: WorkflowStore, task_id: int, name: str) -> dict[str, Any]:
    return next(s for s in store.get_task(task_id)["steps"] if s["step_name"] == name)


@pytest.fixture
def cfg(make_config: Callable[..., WorkflowConfig], sshd: SshdInfo) -> WorkflowConfig:
    return make_config(sshd)


def test_train_then_infer(cfg: WorkflowConfig) -> None:
    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local", experiment_id="DeepFM_demo")
    other = new_task(store, server="local", experiment_id="DeepFM_demo")
    stage_data(cfg, task_id)
    root = cfg.server("local").remote_root
    Path(paths.remote_task_dir(root, other)).mkdir(parents=True)
    marker = Path(paths.remote_task_dir(root, other)) / "untouched"
    marker.write_text("x")

    metrics = TrainOperator(task_id="train").execute(context(task_id))
    assert metrics["auc"] >= 0.70 and metrics["rows"] == SAMPLE_ROWS
    assert step(store, task_id, "train")["status"] == StepStatus.COMPLETED
    assert store.step_result(task_id, "train")["auc"] == metrics["auc"]
    messages = [e["message"] for e in store.logs_after(task_id)]
    assert any(m.startswith("epoch 1 step") and "AUC" in m for m in messages), messages

    first = InferOperator(task_id="infer").execute(context(task_id))
    out = paths.remote_predictions(root, task_id)
    table = pq.read_table(out)
    assert first["rows"] == INFER_ROWS == table.num_rows
    assert table.column_names == ["id", "score"]
    assert table["id"].to_pylist() == list(range(10**6, 10**6 + INFER_ROWS))
    scores = table["score"].to_pylist()
    assert all(0 < s < 1 for s in scores)

    InferOperator(task_id="infer").execute(context(task_id))
    assert pq.read_table(out)["score"].to_pylist() == scores
    assert marker.read_text() == "x" and sorted(p.name for p in marker.parent.iterdir()) == ["untouched"]


def test_unknown_expid_fails_clearly(cfg: WorkflowConfig) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local", experiment_id="NoSuchExp")
    stage_data(cfg, task_id)
    with pytest.raises(AirflowFailException, match="NoSuchExp"):
        TrainOperator(task_id="train").execute(context(task_id))
    failed = step(store, task_id, "train")
    assert (
        failed["status"] == StepStatus.FAILED
        and "experiment 'NoSuchExp' not found" in failed["error_message"]
    )


def test_missing_feature_column_fails_clearly(cfg: WorkflowConfig) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local", experiment_id="DeepFM_demo")
    stage_data(cfg, task_id, sample=make_ctr_table(500, seed=1).drop_columns(["c3"]))
    with pytest.raises(AirflowFailException):
        TrainOperator(task_id="train").execute(context(task_id))
    assert "column(s) c3 missing" in step(store, task_id, "train")["error_message"]


def test_killed_runner_fails_the_stage(cfg: WorkflowConfig, sshd: SshdInfo) -> None:
    import subprocess

    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local", experiment_id="DeepFM_demo")
    stage_data(cfg, task_id, sample=make_ctr_table(60_000, seed=1))
    work_dir = paths.remote_work_dir(cfg.server("local").remote_root, task_id)

    def kill_when_running() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = subprocess.run(
                ["pgrep", "-f", f"runner.py train .*{work_dir}"], capture_output=True, text=True
            )
            if found.stdout.strip():
                time.sleep(1.0)
                subprocess.run(["pkill", "-9", "-f", f"runner.py train .*{work_dir}"])
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    with pytest.raises(Exception, match="runner"):
        TrainOperator(task_id="train").execute(context(task_id))
    killer.join()
    failed = step(store, task_id, "train")
    assert failed["status"] == StepStatus.FAILED and "runner" in failed["error_message"]
