"""Stages train and infer with the bundled demo experiments (plain, sequence, multi-task), and
the ways a train fails: the runner shipped to a real sshd and real FuXiCTR training (runs.py)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from fuxictr_workflow.demo.synthetic import make_ctr_table
from fuxictr_workflow.domain import paths
from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.domain.stages import StepStatus
from fuxictr_workflow.orchestration.operators.fuxictr import TrainOperator
from fuxictr_workflow.store import get_store
from tests.conftest import new_task, write_config
from tests.fuxictr.runs import (
    DEMO_CONFIG,
    INFER_ROWS,
    SAMPLE_ROWS,
    Pipelines,
    check_epochs,
    failed_train,
    stage_data,
    step,
)
from tests.stage_runs import run_stage, stage_context

pytestmark = pytest.mark.timeout(600)


def test_train_then_infer(pipelines: Pipelines) -> None:
    run = pipelines.outcome("DeepFM_demo")
    metrics = run.train
    assert metrics["auc"] >= 0.70 and metrics["rows"] == SAMPLE_ROWS
    assert run.train_step["status"] == StepStatus.COMPLETED
    assert run.train_result["auc"] == metrics["auc"] and run.train_result["model"] == "DeepFM"
    # the demo's model, from the demo bundle shipped to this server (it has no config dir of its own)
    assert "/.demo/" in metrics["model_source"] and metrics["model_source"].endswith("/models.py"), metrics
    messages = run.train_messages
    assert any(m.startswith("epoch 1 step") and "AUC" in m for m in messages), messages
    check_epochs(run, DEMO_CONFIG, "DeepFM_demo")

    (first, table), (_, again) = run.infers
    assert first["rows"] == INFER_ROWS == table.num_rows
    assert table.column_names == ["id", "score"]
    assert table["id"].to_pylist() == list(range(10**6, 10**6 + INFER_ROWS))
    scores = table["score"].to_pylist()
    assert all(0 < s < 1 for s in scores)

    assert again["score"].to_pylist() == scores
    marker = run.neighbour
    assert marker is not None
    assert marker.read_text() == "x" and sorted(p.name for p in marker.parent.iterdir()) == ["untouched"]


def test_unknown_expid_fails_clearly(cfg: WorkflowConfig) -> None:
    _, failed = failed_train(cfg, "NoSuchExp", "NoSuchExp")
    assert "experiment 'NoSuchExp' not found" in failed["error_message"]


def test_missing_feature_column_fails_clearly(cfg: WorkflowConfig) -> None:
    sample = make_ctr_table(500, seed=1).drop_columns(["c3"])
    _, failed = failed_train(cfg, "DeepFM_demo", "column", sample=sample)
    assert "column(s) c3 missing" in failed["error_message"]


def test_killed_runner_fails_the_stage(cfg: WorkflowConfig) -> None:
    import subprocess

    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local", experiment_id="DeepFM_demo")
    stage_data(cfg, task_id, sample=make_ctr_table(60_000, seed=1))
    work_dir = paths.remote_work_dir(cfg.server("local").remote_root, task_id)
    # the runner's own process (`python .../runner.py train ...`), not `job.py start` nor the
    # job's supervisor, whose command lines name runner.py further along: on a busy machine
    # `job.py start` is still waiting for the job to record itself when the runner shows
    runner = f"^[^ ]+ [^ ]*/runner[.]py train .*{work_dir}"

    def kill_when_running() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = subprocess.run(["pgrep", "-f", runner], capture_output=True, text=True)
            if found.stdout.strip():
                time.sleep(1.0)
                subprocess.run(["pkill", "-9", "-f", runner])
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    with pytest.raises(Exception, match="runner"):
        run_stage(TrainOperator(task_id="train"), stage_context(task_id))
    killer.join()
    failed = step(store, task_id, "train")
    assert failed["status"] == StepStatus.FAILED and "runner" in failed["error_message"]


def test_demo_sequence_and_multitask_experiments(pipelines: Pipelines) -> None:
    """The bundled demo config's sequence and multi-task experiments on the extended synthetic data."""
    for expid, scores in (
        ("DeepFM_seq_demo", ["score"]),
        ("SharedBottom_mtl_demo", ["score_label", "score_conversion"]),
    ):
        run = pipelines.outcome(expid)
        assert run.train["auc"] >= 0.70, (expid, run.train)
        check_epochs(run, DEMO_CONFIG, expid)
        [(_, table)] = run.infers
        assert table.column_names == ["id", *scores] and table.num_rows == INFER_ROWS


def test_a_train_past_its_execution_timeout_is_stopped_by_its_follower(
    cfg: WorkflowConfig, pipelines: Pipelines, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow applies no execution_timeout while train is deferred: the trigger stops the job
    once it has run task.execution_timeout_s.train seconds (1 here; starting Python and torch
    alone takes longer), and the step fails naming the key, not retried."""
    import subprocess

    import yaml

    from fuxictr_workflow.domain.config import CONFIG_ENV

    # last in the module, and after its pipelines: the config below is the whole process's
    pipelines.settle()
    data = yaml.safe_load(Path(os.environ[CONFIG_ENV]).read_text())
    data["task"] = {"execution_timeout_s": {"train": 1}}
    path = write_config(tmp_path / "config.yaml", data)
    monkeypatch.setenv(CONFIG_ENV, str(path))
    task_id, failed = failed_train(cfg, "DeepFM_demo", "train ran longer than its execution_timeout of 1 s")
    assert "(config task.execution_timeout_s.train)" in failed["error_message"]
    assert "its train job on the training server was stopped" in failed["error_message"]
    work_dir = paths.remote_work_dir(cfg.server("local").remote_root, task_id)
    left = subprocess.run(["pgrep", "-f", f"runner.py train .*{work_dir}"], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_the_experiments_own_seed_holds_unless_the_config_sets_one(cfg: WorkflowConfig) -> None:
    """fuxictr.seed unset: train passes no --seed, so the runner keeps the experiment config's
    `seed`, as FuXiCTR's own flow does; set: it overrides it."""
    from types import SimpleNamespace

    from fuxictr_workflow.domain.config import FuxictrConfig

    op, server = TrainOperator(task_id="train"), SimpleNamespace(remote_root="/r")
    for seed, expected in ((None, []), (7, ["--seed", "7"])):
        op.workflow_config = cfg.model_copy(update={"fuxictr": FuxictrConfig(seed=seed)})
        args = op.runner_args(server, 1, "/config")  # type: ignore[arg-type]
        assert args[args.index("--valid-fraction") + 2 :] == expected, args
