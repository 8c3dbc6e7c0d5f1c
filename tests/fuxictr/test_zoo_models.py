"""Stages train and infer with models of a FuXiCTR model_zoo checkout (the test zoo: the layouts
and feature kinds FuXiCTR's own zoo uses), through the runner on a real sshd (runs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.ssh.runner_bundle import DEMO
from tests.fuxictr.runs import INFER_ROWS, SAMPLE_ROWS, ZOO, Pipelines, check_epochs, failed_train

pytestmark = pytest.mark.timeout(600)


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
def test_zoo_model_trains_and_scores(pipelines: Pipelines, expid: str, source: str) -> None:
    run = pipelines.outcome(expid)
    metrics = run.train
    assert metrics["model_source"] == str(ZOO / source)
    assert metrics["auc"] >= 0.70 and metrics["rows"] == SAMPLE_ROWS
    check_epochs(run, ZOO / "config", expid)

    [(result, table)] = run.infers
    assert result["rows"] == INFER_ROWS == table.num_rows
    assert table.column_names == ["id", "score"]
    assert all(0 < s < 1 for s in table["score"].to_pylist())


def test_a_server_with_its_own_config_gets_no_demo_code(cfg: WorkflowConfig, pipelines: Pipelines) -> None:
    """The zoo server trained and scored above with its own config dir: the runner bundle was
    shipped to it, the demo's models and config were not."""
    pipelines.outcome("TinyWideDeep_test")
    root = Path(cfg.server("zoo").remote_root)
    shipped = {p.relative_to(root).as_posix() for p in root.glob(".*/*/**/*") if p.is_file()}
    assert any(name.startswith(".runner/") and name.endswith("/runner.py") for name in shipped), shipped
    assert not (root / ".demo").exists()
    assert not [name for name in shipped if name.rsplit("/", 1)[-1] in {Path(d).name for d in DEMO}], shipped


def test_multitask_zoo_model_scores_each_task(pipelines: Pipelines) -> None:
    run = pipelines.outcome("TinyMMoE_test")
    metrics = run.train
    assert metrics["model_source"] == str(ZOO / "model_zoo/multitask/TinyMMoE/src/TinyMMoE.py")
    assert set(metrics["tasks"]) == {"label", "conversion"}
    assert all(task["auc"] >= 0.70 for task in metrics["tasks"].values()), metrics
    messages = run.train_messages
    assert any("label_AUC" in m and "conversion_AUC" in m for m in messages), messages
    check_epochs(run, ZOO / "config", "TinyMMoE_test")  # each epoch's AUC: the tasks' mean

    [(_, table)] = run.infers
    assert table.column_names == ["id", "score_label", "score_conversion"]
    assert table.num_rows == INFER_ROWS
    clicks, conversions = table["score_label"].to_pylist(), table["score_conversion"].to_pylist()
    assert all(0 < s < 1 for s in clicks + conversions) and clicks != conversions


def test_model_missing_from_zoo_is_an_error_naming_the_dirs(cfg: WorkflowConfig) -> None:
    _, failed = failed_train(cfg, "NotInZoo_test", "NotInZoo", server="zoo", extended=True)
    message = failed["error_message"]
    assert "model 'NotInZoo' not found" in message
    for searched in ("NotInZoo/src", "NotInZoo/NotInZoo_torch/src", "multitask/NotInZoo/src"):
        assert str(ZOO / "model_zoo" / searched) in message, message
