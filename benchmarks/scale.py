"""Many pipelines at once on LocalExecutor and on the Celery stack, in one run.

    python -m benchmarks.scale [--tasks 20] [--slots 2] [--sample-rows N] [--infer-rows N]

For each executor a fresh stack (`make serve`, `make serve EXECUTOR=celery`) gets `--tasks`
tasks created at once through the plugin's API, with `max_concurrent_trainings: --slots`, and
runs them to the end. Prints per-executor figures, then, last, one JSON line: tasks,
local_wall_s / celery_wall_s (first POST to last task final), max_concurrent_train (the most
train steps open at one instant, from task_steps, over both runs), p50_task_s / p95_task_s
(task created → completed, Celery; local_p50_task_s / local_p95_task_s for LocalExecutor),
lost (tasks not completed) and duplicated_rows (Hive rows beyond each task's inference rows).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))

from scripts import demo  # noqa: E402
from scripts.sshd import free_port  # noqa: E402


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant (an end at a start's instant closes first)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = most = 0
    for _, change in edges:
        open_now += change
        most = max(most, open_now)
    return most


def _interval(found: dict[str, Any], now: datetime | None) -> tuple[datetime, datetime]:
    end = found["completed_at"] or now
    return datetime.fromisoformat(str(found["started_at"])), datetime.fromisoformat(str(end))


def _step(task: dict[str, Any], step: str) -> dict[str, Any]:
    return next(s for s in task["steps"] if s["step_name"] == step)


def step_interval(task: dict[str, Any], step: str, now: datetime | None = None) -> tuple[datetime, datetime]:
    """When the task's step was open; a step with no end yet (still running, or its task lost)
    is open until `now`, which a caller passes when the step may not have ended."""
    return _interval(_step(task, step), now)


def started_intervals(
    tasks: list[dict[str, Any]], step: str, now: datetime
) -> list[tuple[datetime, datetime]]:
    """The step's interval of every task that started it, ended or not."""
    return [_interval(found, now) for found in (_step(t, step) for t in tasks) if found["started_at"]]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_load(
    executor: str, tasks: int, slots: int, sample_rows: int, infer_rows: int, timeout: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"fxw-scale-{executor}-") as work:
        services = demo.Services(
            Path(work),
            free_port(),
            sample_rows=sample_rows,
            infer_rows=infer_rows,
            config={"servers": {"local": {"max_concurrent_trainings": slots}}},
            executor=executor,
        )
        try:
            services.start()
            return load(services, tasks, infer_rows, timeout)
        finally:
            services.stop()


def load(services: demo.Services, tasks: int, infer_rows: int, timeout: float) -> dict[str, Any]:
    from fuxictr_workflow.domain.stages import FINAL_TASK_STATUSES
    from fuxictr_workflow.store import get_store
    from fuxictr_workflow.store.database import utcnow

    token = demo.get_token(services.port, services.airflow_home)
    store = get_store(
        demo.yaml.safe_load(Path(services.env["FUXICTR_WORKFLOW_CONFIG"]).read_text())["store"]["url"]
    )

    def submit(i: int) -> int:
        body = {**demo.SEED_BODY, "name": f"scale-{i}", "hdfs_path": str(services.work / "hdfs")}
        return int(
            demo.api(services.port, token, "POST", "/api/workflow/tasks", body, timeout=300)["task_id"]
        )

    started = time.monotonic()
    with ThreadPoolExecutor(tasks) as pool:
        ids = list(pool.map(submit, range(tasks)))
    # a task still going at the deadline counts as lost: the figure is reported, not waited for
    deadline = started + timeout
    while not all(store.get_task(i, with_steps=False)["status"] in FINAL_TASK_STATUSES for i in ids):
        if time.monotonic() > deadline:
            break
        time.sleep(2)
    wall_s = time.monotonic() - started
    finished = [store.get_task(i) for i in ids]
    now = utcnow()  # the store's clock: naive UTC
    completed = [t for t in finished if t["status"] == "completed"]
    conns = {k: v for k, v in services.env.items() if k.startswith("AIRFLOW_CONN_")}
    rows = {
        t["id"]: int(
            demo.hive_run(
                [f"SELECT count(*) FROM {demo.SEED_BODY['hive_table']} WHERE task_id = {int(t['id'])}"], conns
            )[0][0][0]
        )
        for t in completed
    }
    durations = [
        (
            datetime.fromisoformat(str(t["completed_at"])) - datetime.fromisoformat(str(t["created_at"]))
        ).total_seconds()
        for t in completed
    ]
    return {
        "wall_s": round(wall_s, 1),
        "completed": len(completed),
        "lost": tasks - len(completed),
        "failed": {t["id"]: t["error_message"] for t in finished if t["status"] != "completed"},
        # every task's training, failed and unfinished ones too: the cap holds for all of them
        "max_concurrent_train": max_overlap(started_intervals(finished, "train", now)),
        "p50_task_s": round(statistics.median(durations), 1) if durations else None,
        "p95_task_s": round(percentile(durations, 0.95), 1) if durations else None,
        "duplicated_rows": sum(max(0, n - infer_rows) for n in rows.values()),
        "short_rows": sum(max(0, infer_rows - n) for n in rows.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--sample-rows", type=int, default=6000)
    parser.add_argument("--infer-rows", type=int, default=1500)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per executor's load")
    args = parser.parse_args(argv)
    runs = {}
    for executor in demo.EXECUTORS:
        runs[executor] = run_load(
            executor, args.tasks, args.slots, args.sample_rows, args.infer_rows, args.timeout
        )
        print(json.dumps({"executor": executor, **runs[executor]}), flush=True)
    local, celery = runs["local"], runs["celery"]
    print(
        json.dumps(
            {
                "tasks": args.tasks,
                "slots": args.slots,
                "local_wall_s": local["wall_s"],
                "celery_wall_s": celery["wall_s"],
                "max_concurrent_train": max(local["max_concurrent_train"], celery["max_concurrent_train"]),
                "p50_task_s": celery["p50_task_s"],
                "p95_task_s": celery["p95_task_s"],
                "local_p50_task_s": local["p50_task_s"],
                "local_p95_task_s": local["p95_task_s"],
                "lost": local["lost"] + celery["lost"],
                "duplicated_rows": local["duplicated_rows"] + celery["duplicated_rows"],
            }
        )
    )
    broken = [
        f"{name}: {what}"
        for name, run in runs.items()
        for what, bad in (
            (
                f"{run['max_concurrent_train']} trainings at once (cap {args.slots})",
                run["max_concurrent_train"] > args.slots,
            ),
            (f"{run['lost']} tasks not completed", run["lost"] > 0),
            (f"{run['duplicated_rows']} duplicated rows", run["duplicated_rows"] > 0),
            (f"{run['short_rows']} missing rows", run["short_rows"] > 0),
        )
        if bad
    ]
    for line in broken:
        print(f"FAILED {line}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
