"""The train stage as the fault tests see it: its runner on the training server (this machine),
its job directory, its Airflow task instance, and a re-run of it in a finished run, as a user
clears it in the UI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path
from urllib.parse import quote

from fuxictr_workflow.domain import paths
from fuxictr_workflow.orchestration.dag_params import dag_id_for
from fuxictr_workflow.ssh import runner_job
from scripts import airflow_stack, demo
from scripts.processes import ProcessRef
from tests.e2e.stack import Stack

FINISHED_RUN = ("success", "failed")


def runner_processes(stack: Stack, task_id: int, command: str) -> list[ProcessRef]:
    """The runner processes working on `command` for the task on the stack's training server
    (this machine; other stacks' runners may run beside them)."""
    marker = paths.remote_task_dir(str(stack.services.work / "server"), task_id) + "/"
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            # the runner's own process: `python .../runner.py <command> ...` (job.py's supervisor
            # names runner.py further along its argv)
            found_one = entry.name.isdigit() and len(argv) > 1 and argv[1].endswith(b"runner.py")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if found_one and command in words and any(marker in w for w in words):
            try:
                found.append(ProcessRef.of(int(entry.name)))
            except OSError:
                continue
    return found


def job_dir(stack: Stack, task_id: int) -> Path:
    return Path(
        runner_job.job_dir(paths.remote_task_dir(str(stack.services.work / "server"), task_id), "train")
    )


def recorded_runner(stack: Stack, task_id: int) -> ProcessRef:
    """The task's train runner once its job has recorded it (job.json names its pid). The
    runner shows in /proc a moment before its supervisor writes job.json; a runner frozen
    inside that moment would freeze its supervisor too, and `job.py start` would wait in vain
    for the job to record itself."""

    def recorded() -> bool:
        found = runner_processes(stack, task_id, "train")
        try:
            return (
                len(found) == 1
                and json.loads((job_dir(stack, task_id) / "job.json").read_text())["pid"] == found[0].pid
            )
        except (OSError, ValueError, KeyError):
            return False

    stack.wait_until("the train runner to be recorded", recorded, 300, 0.02)
    (runner,) = runner_processes(stack, task_id, "train")
    return runner


def log_mark(stack: Stack, task_id: int) -> int:
    """How many workflow log lines the task has now: lines after it are a re-run's."""
    return len(stack.store.logs_after(task_id, limit=100_000))


def assert_trained_once(stack: Stack, task_id: int, runner: ProcessRef, since: int = 0) -> None:
    """The train job that ran to the end is the one first seen: same pid, never restarted (a
    restart would have archived this runner's job as job.json.prev), and its start was logged
    once since log line `since`."""
    job = json.loads((job_dir(stack, task_id) / "job.json").read_text())
    assert job["pid"] == runner.pid
    prev = job_dir(stack, task_id) / "job.json.prev"
    assert not prev.exists() or json.loads(prev.read_text())["pid"] != runner.pid, "the job was restarted"
    ticks = [
        e["message"]
        for e in stack.store.logs_after(task_id, limit=100_000)[since:]
        if "train job started" in e["message"]
    ]
    assert len(ticks) == 1, ticks


def dag_and_run(stack: Stack, task_id: int) -> tuple[str, str]:
    task = stack.store.get_task(task_id, with_steps=False)
    cfg = stack.config()
    return dag_id_for(task["server"] or cfg.default_server, cfg.default_server), task["dag_run_id"]


def run_path(stack: Stack, task_id: int) -> str:
    dag_id, run_id = dag_and_run(stack, task_id)
    return f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"


def task_instance_path(stack: Stack, task_id: int, stage: str = "train") -> str:
    """Airflow's REST path of a stage's task instance in the workflow task's run."""
    return f"{run_path(stack, task_id)}/taskInstances/{stage}"


def ti_state(stack: Stack, task_id: int) -> dict:
    return demo.api(stack.port, stack.token, "GET", task_instance_path(stack, task_id))


def run_state(stack: Stack, task_id: int) -> str:
    return str(demo.api(stack.port, stack.token, "GET", run_path(stack, task_id))["state"])


def clear_train(stack: Stack, task_id: int, state: str) -> None:
    """Clear train and its downstream task instances in the task's run, as the UI's Clear does,
    once the UI shows the run in `state`. After a failure that is "failed": the store records
    the failure before the scheduler has marked the downstream stages upstream_failed and the
    run failed, and a clear inside that window loses to the scheduler (the run ends failed with
    train never queued again)."""
    dag_id, run_id = dag_and_run(stack, task_id)
    stack.wait_until(f"Airflow to show the run {state}", lambda: run_state(stack, task_id) == state, 120, 0.5)
    body = {
        "dry_run": False,
        "task_ids": ["train"],
        "dag_run_id": run_id,
        "include_downstream": True,
        "only_failed": False,
    }
    demo.api(stack.port, stack.token, "POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", body)


def rerun_train(stack: Stack, task_id: int) -> int:
    """Train again, and every stage after it, in the task's finished run, as a user clears train
    with its downstream tasks in the UI. (Clearing train alone in a run that succeeded would let
    Airflow mark the run successful again at once, its leaf tasks being successful, while train
    still runs: a mark or cancel would then meet a finished run.) Waits until the task runs
    again; returns the log mark of the re-run (see `log_mark`)."""
    stack.wait_until("the task's run to finish", lambda: run_state(stack, task_id) in FINISHED_RUN, 300, 0.5)
    since = log_mark(stack, task_id)
    clear_train(stack, task_id, run_state(stack, task_id))
    stack.wait_until(
        "the task to run again",
        lambda: stack.store.get_task(task_id, with_steps=False)["status"] == "running",
        300,
        0.2,
    )
    return since


def freeze_followed_runner(stack: Stack, task_id: int, state: str) -> tuple[ProcessRef, int]:
    """Freeze (SIGSTOP) the task's train runner as soon as its job is recorded, so it cannot
    end by itself (the demo training takes seconds), then wait until train's task instance is
    `state` and something follows the job (the task's heartbeat moves after that: the
    trigger's or the worker's polls). Returns the runner and its process group; the caller
    sends SIGCONT to the group once the fault is in place."""
    runner = recorded_runner(stack, task_id)
    group = os.getpgid(runner.pid)
    os.killpg(group, signal.SIGSTOP)
    follow_frozen_runner(stack, task_id, state)
    return runner, group


def follow_frozen_runner(stack: Stack, task_id: int, state: str) -> None:
    """Until train's task instance is `state` and something follows its job (the task's
    heartbeat moves after that: the trigger's or the worker's polls)."""
    stack.wait_until(f"train to be {state}", lambda: ti_state(stack, task_id)["state"] == state, 300, 0.5)
    beat = stack.store.get_task(task_id, with_steps=False)["heartbeat_at"]
    stack.wait_until(
        "the job to be followed",
        lambda: stack.store.get_task(task_id, with_steps=False)["heartbeat_at"] != beat,
        300,
        0.2,
    )


def airflow_task_process(stack: Stack, task_id: int, stage: str) -> ProcessRef | None:
    """The Airflow task process running `stage` of the workflow task (LocalExecutor titles it
    ``airflow worker -- <task instance id>``), if one runs."""
    ti_id = demo.api(stack.port, stack.token, "GET", task_instance_path(stack, task_id, stage))["id"]
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            if entry.name.isdigit() and title == f"airflow worker -- {ti_id}":
                return ProcessRef.of(int(entry.name))
        except OSError:
            continue
    return None


def restart_triggerer_after_a_mark(stack: Stack) -> None:
    """Start the triggerer again after a test stopped it while train was deferred and then
    ended that deferral by a mark. The trigger's row outlives its task instance until a
    triggerer's clean-up deletes it, and Airflow on SQLite gives the next trigger row the same
    id; a triggerer still running the old trigger under that id takes the new row for it (it
    keys its triggers by id) and hands the next deferral the old job's event, which fails that
    try. So this waits until the row is gone and nothing follows a job any more (a trigger
    holds an SSH connection to the training server while it runs)."""
    airflow_stack.start_one(stack.services.airflow_home, "triggerer", stack.services.env)
    db = stack.services.airflow_home / "airflow.db"

    def left() -> bool:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            rows = conn.execute("SELECT count(*) FROM trigger").fetchone()[0]
        return rows == 0 and not stack.services.sshd.sessions()

    stack.wait_until("the ended deferral's trigger to be cleaned up", left, 120, 0.5)
