"""Stages train and infer: the runner shipped to a real sshd and real FuXiCTR training."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
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
from tests.stage_runs import run_stage, stage_context

pytestmark = pytest.mark.timeout(600)

SAMPLE_ROWS, INFER_ROWS = 6000, 2000


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

    metrics = run_stage(TrainOperator(task_id="train"), stage_context(task_id))
    assert metrics["auc"] >= 0.70 and metrics["rows"] == SAMPLE_ROWS
    assert step(store, task_id, "train")["status"] == StepStatus.COMPLETED
    assert store.step_result(task_id, "train")["auc"] == metrics["auc"]
    messages = [e["message"] for e in store.logs_after(task_id)]
    assert any(m.startswith("epoch 1 step") and "AUC" in m for m in messages), messages

    first = run_stage(InferOperator(task_id="infer"), stage_context(task_id))
    out = paths.remote_predictions(root, task_id)
    table = pq.read_table(out)
    assert first["rows"] == INFER_ROWS == table.num_rows
    assert table.column_names == ["id", "score"]
    assert table["id"].to_pylist() == list(range(10**6, 10**6 + INFER_ROWS))
    scores = table["score"].to_pylist()
    assert all(0 < s < 1 for s in scores)

    run_stage(InferOperator(task_id="infer"), stage_context(task_id))
    assert pq.read_table(out)["score"].to_pylist() == scores
    assert marker.read_text() == "x" and sorted(p.name for p in marker.parent.iterdir()) == ["untouched"]


def test_unknown_expid_fails_clearly(cfg: WorkflowConfig) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local", experiment_id="NoSuchExp")
    stage_data(cfg, task_id)
    with pytest.raises(AirflowFailException, match="NoSuchExp"):
        run_stage(TrainOperator(task_id="train"), stage_context(task_id))
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
        run_stage(TrainOperator(task_id="train"), stage_context(task_id))
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
        run_stage(TrainOperator(task_id="train"), stage_context(task_id))
    killer.join()
    failed = step(store, task_id, "train")
    assert failed["status"] == StepStatus.FAILED and "runner" in failed["error_message"]


ZOO = Path(__file__).resolve().parent / "fuxictr_zoo"


@pytest.fixture
def zoo_cfg(make_config: Callable[..., WorkflowConfig], sshd: SshdInfo) -> WorkflowConfig:
    """The server trains the user's experiments: its own config dir and model_zoo checkout."""
    server = {"fuxictr_config_dir": str(ZOO / "config"), "model_zoo_path": str(ZOO / "model_zoo")}
    return make_config(sshd, servers={"local": server})


def zoo_data(cfg: WorkflowConfig, task_id: int) -> None:
    stage_data(
        cfg,
        task_id,
        sample=make_ctr_table(SAMPLE_ROWS, seed=1, behaviour=True, conversion=True),
        infer=make_ctr_table(INFER_ROWS, seed=2, with_label=False, id_start=10**6, behaviour=True),
    )


@pytest.mark.parametrize(
    ("expid", "source"),
    [
        # sized from sum_emb_out_dim() under use_features + feature_specs; <Model>/src with a relative import
        ("TinyWideDeep_test", "model_zoo/TinyWideDeep/src/TinyWideDeep.py"),
        # a class living in another model's package (like the zoo's GDCNP in GDCN/src)
        ("TinyDeepWide_test", "model_zoo/TinyWideDeep/src/TinyDeepWide.py"),
        # <Model>/<Model>_torch/src: the zoo's DeepFM, not the bundled demo DeepFM
        ("DeepFM_test", "model_zoo/DeepFM/DeepFM_torch/src/DeepFM.py"),
        # sequence feature sharing the candidate's embedding, DIN-style target attention
        ("TinyDIN_test", "model_zoo/TinyDIN/src/TinyDIN.py"),
    ],
)
def test_zoo_model_trains_and_scores(zoo_cfg: WorkflowConfig, expid: str, source: str) -> None:
    store = get_store(zoo_cfg.store.url)
    task_id = new_task(store, server="local", experiment_id=expid)
    zoo_data(zoo_cfg, task_id)

    metrics = run_stage(TrainOperator(task_id="train"), stage_context(task_id))
    assert metrics["model_source"] == str(ZOO / source)
    assert metrics["auc"] >= 0.70 and metrics["rows"] == SAMPLE_ROWS

    result = run_stage(InferOperator(task_id="infer"), stage_context(task_id))
    table = pq.read_table(paths.remote_predictions(zoo_cfg.server("local").remote_root, task_id))
    assert result["rows"] == INFER_ROWS == table.num_rows
    assert table.column_names == ["id", "score"]
    assert all(0 < s < 1 for s in table["score"].to_pylist())


def test_multitask_zoo_model_scores_each_task(zoo_cfg: WorkflowConfig) -> None:
    store = get_store(zoo_cfg.store.url)
    task_id = new_task(store, server="local", experiment_id="TinyMMoE_test")
    zoo_data(zoo_cfg, task_id)

    metrics = run_stage(TrainOperator(task_id="train"), stage_context(task_id))
    assert metrics["model_source"] == str(ZOO / "model_zoo/multitask/TinyMMoE/src/TinyMMoE.py")
    assert set(metrics["tasks"]) == {"label", "conversion"}
    assert all(task["auc"] >= 0.70 for task in metrics["tasks"].values()), metrics
    messages = [e["message"] for e in store.logs_after(task_id)]
    assert any("label_AUC" in m and "conversion_AUC" in m for m in messages), messages

    run_stage(InferOperator(task_id="infer"), stage_context(task_id))
    table = pq.read_table(paths.remote_predictions(zoo_cfg.server("local").remote_root, task_id))
    assert table.column_names == ["id", "score_label", "score_conversion"]
    assert table.num_rows == INFER_ROWS
    clicks, conversions = table["score_label"].to_pylist(), table["score_conversion"].to_pylist()
    assert all(0 < s < 1 for s in clicks + conversions) and clicks != conversions


def test_model_missing_from_zoo_is_an_error_naming_the_dirs(zoo_cfg: WorkflowConfig) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    store = get_store(zoo_cfg.store.url)
    task_id = new_task(store, server="local", experiment_id="NotInZoo_test")
    zoo_data(zoo_cfg, task_id)
    with pytest.raises(AirflowFailException, match="NotInZoo"):
        run_stage(TrainOperator(task_id="train"), stage_context(task_id))
    message = step(store, task_id, "train")["error_message"]
    assert "model 'NotInZoo' not found" in message
    for searched in ("NotInZoo/src", "NotInZoo/NotInZoo_torch/src", "multitask/NotInZoo/src"):
        assert str(ZOO / "model_zoo" / searched) in message, message


def test_demo_sequence_and_multitask_experiments(cfg: WorkflowConfig) -> None:
    """The bundled demo config's sequence and multi-task experiments on the extended synthetic data."""
    store = get_store(cfg.store.url)
    for expid, scores in (
        ("DeepFM_seq_demo", ["score"]),
        ("SharedBottom_mtl_demo", ["score_label", "score_conversion"]),
    ):
        task_id = new_task(store, server="local", experiment_id=expid)
        zoo_data(cfg, task_id)
        metrics = run_stage(TrainOperator(task_id="train"), stage_context(task_id))
        assert metrics["auc"] >= 0.70, (expid, metrics)
        run_stage(InferOperator(task_id="infer"), stage_context(task_id))
        table = pq.read_table(paths.remote_predictions(cfg.server("local").remote_root, task_id))
        assert table.column_names == ["id", *scores] and table.num_rows == INFER_ROWS
