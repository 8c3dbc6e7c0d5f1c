"""`make demo`'s summary.json is built from the task as GET /tasks/{id} answers it."""

from __future__ import annotations

import time

from scripts.demo import summarize

EPOCHS = [
    {"epoch": 1, "auc": 0.71, "logloss": 0.55, "train_loss": 0.62},
    {"epoch": 2, "auc": 0.74, "logloss": 0.52, "train_loss": 0.5},
]


def test_the_summary_has_the_train_steps_epochs() -> None:
    steps = [
        {"step_name": "train", "status": "completed", "result": {"auc": 0.74, "logloss": 0.52, "seconds": 9}},
        {"step_name": "infer", "status": "completed", "result": {"rows": 5000}},
        {"step_name": "data_upload", "status": "completed", "result": {"bytes": 10, "mb_per_s": 1.0}},
        {"step_name": "result_download", "status": "completed", "result": None},
    ]
    task = {"id": 3, "status": "completed", "steps": steps, "epochs": EPOCHS}
    summary = summarize(task, 5000, time.monotonic(), 12.0)
    assert summary["epochs"] == EPOCHS
    assert (summary["auc"], summary["logloss"], summary["infer_rows"]) == (0.74, 0.52, 5000)


def test_the_summary_has_the_quality_gates_decision_with_both_models_figures() -> None:
    gate = {
        "decision": "approved",
        "auc": 0.71,
        "logloss": 0.55,
        "baseline_task_id": 2,
        "baseline_auc": 0.74,
        "baseline_logloss": 0.52,
        "reason": "AUC 0.7100 is 0.0300 below the published model's 0.7400 (allowed: 0.002)",
        "decided_by": "admin",
    }
    steps = [
        {"step_name": n, "status": "completed", "result": None} for n in ("data_upload", "result_download")
    ]
    task = {"id": 3, "status": "completed", "steps": steps, "epochs": [], "quality_gate": gate}
    assert summarize(task, 0, time.monotonic(), 1.0)["quality_gate"] == {
        "decision": "approved",
        "auc": 0.71,
        "baseline_auc": 0.74,
        "logloss": 0.55,
        "baseline_logloss": 0.52,
    }
    assert summarize({**task, "quality_gate": None}, 0, time.monotonic(), 1.0)["quality_gate"] is None
