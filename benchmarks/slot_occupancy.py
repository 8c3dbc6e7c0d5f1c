"""Worker-slot seconds per pipeline: train and infer followed from a worker (the task holds its
slot while the GPU trains, as the operators did before they deferred) against followed from
the triggerer (the task defers), on the demo data and the embedded stack, in one run.

    python benchmarks/slot_occupancy.py [--sample-rows N] [--infer-rows N]

Prints JSON: slot_s_before / slot_s_after (seconds train and infer held a worker slot, summed),
train_s (the train step's duration), each mode's pipeline seconds, and the ratio; and, for the
deferred run, how long the runner's lines took from the job's log file on the training server
to the workflow log and to a WebSocket viewer (benchmarks/follow_latency.py says how). A stage's
slot time is read from its workflow log: from "<stage> started" to the suspension line, plus
from "resumed on a worker" to "<stage> finished" (the whole span when it never suspended).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))

from benchmarks.follow_latency import JobLogWatcher, WebSocketRecorder, latencies  # noqa: E402
from fuxictr_workflow.domain import paths  # noqa: E402
from scripts import demo  # noqa: E402
from scripts.sshd import free_port  # noqa: E402

FOLLOWED_STAGES = ("train", "infer")


def slot_seconds(events: list[dict[str, Any]], stage: str) -> float:
    """Seconds the stage's Airflow task ran on a worker, from its workflow log lines."""
    held, since = 0.0, None
    for event in events:
        if event["step"] != stage:
            continue
        ts, message = event["timestamp"], event["message"]
        if message.startswith(f"{stage} started") or message.startswith(f"{stage} resumed on a worker"):
            since = ts
        elif since is not None and (
            message.startswith(f"{stage} goes on on the training server")
            or message.startswith(f"{stage} finished")
            or message.startswith(f"{stage} failed")
        ):
            held += (ts - since).total_seconds()
            since = None
    return held


def run_pipeline(services: demo.Services, token: str, follow_from: str) -> dict[str, Any]:
    config = Path(services.env["FUXICTR_WORKFLOW_CONFIG"])
    data = demo.yaml.safe_load(config.read_text())
    data.setdefault("task", {})["follow_jobs_from"] = follow_from
    config.write_text(demo.yaml.safe_dump(data, sort_keys=False))  # every process re-reads a changed file
    body = {**demo.SEED_BODY, "name": f"slots-{follow_from}", "hdfs_path": str(services.work / "hdfs")}
    started = time.monotonic()
    task_id = demo.api(services.port, token, "POST", "/api/workflow/tasks", body)["task_id"]
    watcher = JobLogWatcher(services.work / "server", f"{paths.task_dirname(task_id)}/jobs/train/log")
    viewer = WebSocketRecorder(
        f"ws://127.0.0.1:{services.port}/api/workflow/tasks/{task_id}/logs?token={token}"
    )
    watcher.start()
    viewer.start()
    while (task := demo.api(services.port, token, "GET", f"/api/workflow/tasks/{task_id}"))["status"] not in (
        "completed",
        "failed",
        "cancelled",
    ):
        time.sleep(1)
    pipeline_s = time.monotonic() - started
    watcher.done.set()
    watcher.join(30)
    viewer.join(60)
    if task["status"] != "completed":
        raise RuntimeError(f"pipeline ({follow_from}) ended {task['status']}: {task.get('error_message')}")
    from fuxictr_workflow.store import get_store

    store = get_store(demo.yaml.safe_load(config.read_text())["store"]["url"])
    events = store.logs_after(task_id, limit=100_000)
    train_s = float((store.step_result(task_id, "train") or {})["seconds"])
    return {
        "task_id": task_id,
        "pipeline_s": round(pipeline_s, 1),
        "slot_s": round(sum(slot_seconds(events, s) for s in FOLLOWED_STAGES), 1),
        "train_s": round(train_s, 1),
        "follow": latencies("train", "train", watcher.lines, events, viewer.messages),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sample-rows", type=int, default=demo.SAMPLE_ROWS)
    parser.add_argument("--infer-rows", type=int, default=demo.INFER_ROWS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fxw-slots-") as work:
        services = demo.Services(
            Path(work), free_port(), sample_rows=args.sample_rows, infer_rows=args.infer_rows
        )
        try:
            services.start()
            token = demo.get_token(services.port, services.airflow_home)
            before = run_pipeline(services, token, "worker")
            after = run_pipeline(services, token, "triggerer")
        finally:
            services.stop()
    print(
        json.dumps(
            {
                "slot_s_before": before["slot_s"],
                "slot_s_after": after["slot_s"],
                "train_s": after["train_s"],
                "train_s_before": before["train_s"],
                "pipeline_s_before": before["pipeline_s"],
                "pipeline_s_after": after["pipeline_s"],
                "slot_ratio_after_to_before": round(after["slot_s"] / before["slot_s"], 3)
                if before["slot_s"]
                else None,
                "train_line_latency": after["follow"],
                "train_line_latency_before": before["follow"],
                "sample_rows": args.sample_rows,
                "infer_rows": args.infer_rows,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
