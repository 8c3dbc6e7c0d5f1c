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
