"""End to end through the real processes: sshd, Spark Thrift Server, Airflow api-server +
scheduler + dag-processor + triggerer (LocalExecutor), FuXiCTR training — the `make demo`
stack on smaller data — plus pipeline-level fault tests: each injects a real fault (a killed
process, cut SSH sessions, a user's mark or clear in Airflow) and checks that nothing is lost
or done twice and the task still completes.

The package's stack (tests/e2e/conftest.py) serves the module; the fault-free runs start
together before the first test (tests/e2e/launch.py). The train-stage fault tests re-run train
in the completed API task's run, as a user clears it in the UI (its data is staged already),
one after another in file order: each leaves the task finished for the next.
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from benchmarks.scale import max_overlap, step_interval
from fuxictr_workflow.domain.stages import STAGE_NAMES
from fuxictr_workflow.store import WorkflowStore
from scripts import airflow_stack, demo
from tests.e2e import train_job
from tests.e2e.launch import LATE_TABLE, Launched, LogFollower
from tests.e2e.stack import INFER_ROWS, SAMPLE_ROWS, Stack
from tests.e2e.train_job import (
    airflow_task_process,
    assert_trained_once,
    follow_frozen_runner,
    freeze_followed_runner,
    recorded_runner,
    rerun_train,
    runner_processes,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def assert_stage_sequence(events: list[dict], task_id: int) -> None:
    """Every stage reports started and finished, stages in order."""
    assert all(set(e) == {"task_id", "step", "message", "level", "timestamp"} for e in events)
    assert {e["task_id"] for e in events} == {task_id}
    starts: dict[str, int] = {}
    ends: dict[str, int] = {}
    for i, event in enumerate(events):
        step, message = event["step"], event["message"]
        if message.startswith(f"{step} started"):
            starts.setdefault(step, i)
        elif message.startswith(f"{step} finished in"):
            ends.setdefault(step, i)
    assert sorted(ends, key=ends.__getitem__) == list(STAGE_NAMES), f"finished: {ends}"
    for step in STAGE_NAMES:
        assert starts[step] < ends[step], step


def test_pipeline_end_to_end(stack: Stack, launched: Launched) -> None:
    task_id, follower = launched.api_task, launched.follower
    task = stack.assert_completed(task_id)
    follower.join(120)
    assert follower.closed_normally, "the WebSocket did not close normally after the final state"
    assert_stage_sequence(follower.events, task_id)
    stored = stack.store.logs_after(task_id, limit=100_000)
    assert [e["message"] for e in follower.events] == [e["message"] for e in stored]
    train = json.loads(next(s["result"] for s in task["steps"] if s["step_name"] == "train"))
    assert train["auc"] >= 0.7
    log_dir = stack.services.work / "logs" / "workflow" / f"task_{task_id}"
    assert list(log_dir.glob("*.log")), "no per-task log files"


def test_pipelines_started_together_share_the_training_pool(stack: Stack, launched: Launched) -> None:
    """The API task and the REST-triggered run ran side by side; the server's pool
    (max_concurrent_trainings) let one train or infer run at a time across them."""
    stack.wait_until(
        "a task for the REST run",
        lambda: stack.store.find_task_by_run("fuxictr_workflow", launched.rest_run),
        300,
        1,
    )
    tasks = [
        stack.assert_completed(t)
        for t in (launched.api_task, int(stack.store.find_task_by_run("fuxictr_workflow", launched.rest_run)))
    ]
    slots = stack.config().server(stack.config().default_server).max_concurrent_trainings
    pooled = [step_interval(task, step) for task in tasks for step in ("train", "infer")]
    assert max_overlap(pooled) <= slots, pooled


# -- train-stage faults, on the completed API task's train re-run (file order matters) --


def test_worker_killed_mid_train_follows_the_same_job(stack: Stack, launched: Launched) -> None:
    """With train followed from its worker slot (`task.follow_jobs_from: worker`), SIGKILL the
    Airflow task process mid-train: its next try finds the job running and follows it; the
    training is not restarted and the task completes."""
    task_id = launched.api_task
    with stack.config_changed({"task": {"follow_jobs_from": "worker"}}):
        since = rerun_train(stack, task_id)
        runner, group = freeze_followed_runner(stack, task_id, "running")
        try:
            stack.wait_until(
                "train's Airflow task process",
                lambda: airflow_task_process(stack, task_id, "train") is not None,
                120,
                0.2,
            )
            worker = airflow_task_process(stack, task_id, "train")
            assert worker is not None
            os.kill(worker.pid, signal.SIGKILL)
            stack.wait_until("the task process to die", lambda: not worker.running(), 30, 0.1)
            assert runner.running(), "killing the Airflow task process ended the training"
            stack.wait_until(
                "the next try to follow the job",
                lambda: any(
                    "following it instead of starting another" in e["message"]
                    for e in stack.store.logs_after(task_id, limit=100_000)[since:]
                ),
                300,
                0.5,
            )
        finally:
            os.killpg(group, signal.SIGCONT)
        stack.assert_completed(task_id)
    assert_trained_once(stack, task_id, runner, since)


def test_clear_mid_train_follows_the_same_job(stack: Stack, launched: Launched) -> None:
    """A user clears train in Airflow while it trains: the job is left running (the trigger's
    on_kill sees a cleared task instance), the next try follows it, and the training is not
    restarted. The runner is frozen meanwhile, so it cannot end by itself before the clear."""
    task_id = launched.api_task
    since = rerun_train(stack, task_id)
    runner, group = freeze_followed_runner(stack, task_id, "deferred")
    try:
        train_job.clear_train(stack, task_id, "running")
        stack.wait_until(
            "train's next try to follow the job",
            lambda: (
                (ti := train_job.ti_state(stack, task_id))["try_number"] > 1 and ti["state"] == "deferred"
            ),
            300,
            0.5,
        )
        assert runner.running(), "clearing train ended the training"
    finally:
        os.killpg(group, signal.SIGCONT)
    stack.assert_completed(task_id)
    assert_trained_once(stack, task_id, runner, since)


def test_train_job_outlives_the_stack_processes_and_ssh_links(stack: Stack, launched: Launched) -> None:
    """Mid-train, with a WebSocket client following the task's log: the scheduler is SIGKILLed
    (with it the train task process, if it has not deferred yet) and started again; once the
    triggerer follows the job, every SSH session to the training server is cut (the listener
    stays), the triggerer is SIGKILLed and started again, and the API server restarts. The job
    depends on none of them: it is never restarted, its follower reconnects, the task
    completes, and the client's log has no gap and no duplicate. The runner is frozen
    meanwhile, so it cannot end by itself before the faults are in place.

    One re-run for four faults that each had a pipeline of their own: scheduler killed mid-train,
    triggerer killed mid-train, SSH sessions cut mid-train, API server restarted while followed."""
    task_id = launched.api_task
    home, env = stack.services.airflow_home, stack.services.env
    launched.dags_test.join(600)  # its SSH sessions are on the same sshd: not cut with the task's
    since = rerun_train(stack, task_id)
    follower = LogFollower(stack, task_id)
    follower.start()
    runner = recorded_runner(stack, task_id)
    group = os.getpgid(runner.pid)
    os.killpg(group, signal.SIGSTOP)
    try:
        airflow_stack.stop_one(home, "scheduler", sig=9)
        time.sleep(3)
        airflow_stack.start_one(home, "scheduler", env)
        follow_frozen_runner(stack, task_id, "deferred")
        stack.wait_until(
            "the follower's SSH connection", lambda: bool(stack.services.sshd.sessions()), 60, 0.1
        )
        assert stack.services.sshd.kill_sessions() >= 1
        airflow_stack.stop_one(home, "triggerer", sig=9)
        time.sleep(3)
        airflow_stack.start_one(home, "triggerer", env)
        airflow_stack.stop_one(home, "api-server")
        time.sleep(2)
        airflow_stack.start_one(home, "api-server", env)
        airflow_stack.wait_healthy(stack.port)
        assert runner.running(), "the faults ended the training"
    finally:
        os.killpg(group, signal.SIGCONT)
    stack.assert_completed(task_id)
    assert_trained_once(stack, task_id, runner, since)
    follower.join(180)
    assert follower.reconnects >= 1
    stored = [e["message"] for e in stack.store.logs_after(task_id, limit=100_000)]
    assert [e["message"] for e in follower.events] == stored


@pytest.mark.parametrize("follower", ["worker", "none", "triggerer"])
def test_mark_failed_in_airflow_stops_the_runner(stack: Stack, launched: Launched, follower: str) -> None:
    """A user marks train failed in Airflow (its REST API, as the UI does) mid-train: the
    runner on the training server ends, the step fails saying so, the task fails with it (so
    clearing train in Airflow runs it again) and no later stage runs. The job followed from a
    worker slot is stopped by the operator's on_kill; one followed from the triggerer, or
    followed by nothing (the triggerer is down), by the plugin's listener in the API server,
    which sees the mark."""
    task_id = launched.api_task
    home = stack.services.airflow_home
    follow_from = "worker" if follower == "worker" else "triggerer"
    with stack.config_changed({"task": {"follow_jobs_from": follow_from}}):
        since = rerun_train(stack, task_id)
        runner, group = freeze_followed_runner(
            stack, task_id, "running" if follower == "worker" else "deferred"
        )
        try:
            if follower == "none":
                airflow_stack.stop_one(home, "triggerer")
            path = train_job.task_instance_path(stack, task_id)
            demo.api(stack.port, stack.token, "PATCH", path, {"new_state": "failed"})
            stack.wait_until("the runner to end", lambda: not runner.running(), timeout=180, every=0.5)
            task = stack.wait_final(task_id, timeout=300)
            assert task["status"] == "failed", task
            (train,) = (s for s in task["steps"] if s["step_name"] == "train")
            assert train["status"] == "failed" and "marked failed" in train["error_message"], train
            assert "job on the training server was stopped" in train["error_message"], train
            assert not runner_processes(stack, task_id, "infer")
            # the mark was acted on as a mark (not only as the run's failure that follows it)
            stopping = "train was marked failed in Airflow; stopping its job on the training server"
            said = [e["message"] for e in stack.store.logs_after(task_id, limit=100_000)[since:]]
            assert stopping in said, said[-10:]
        finally:
            if runner.running():
                os.killpg(group, signal.SIGKILL)
            if follower == "none":
                train_job.restart_triggerer_after_a_mark(stack)
    if follower == "triggerer":
        # what the failed step promises: clearing train (and what follows) in Airflow runs it again
        rerun_train(stack, task_id)
        stack.assert_completed(task_id)


def test_run_marked_success_mid_train_stops_the_runner_and_completes_the_task(
    stack: Stack, launched: Launched
) -> None:
    """A user marks the whole run success in Airflow mid-train (its REST API, as the UI does):
    Airflow sets train (deferred) to success and the stages after it to skipped. The runner on
    the training server ends (train's own mark, followed in the API server), and the workflow
    task follows the run: completed, with train and the stages after it skipped, each saying
    the mark; no later stage runs."""
    task_id = launched.api_task
    rerun_train(stack, task_id)
    runner, group = freeze_followed_runner(stack, task_id, "deferred")
    try:
        demo.api(stack.port, stack.token, "PATCH", train_job.run_path(stack, task_id), {"state": "success"})
        stack.wait_until("the runner to end", lambda: not runner.running(), timeout=180, every=0.5)
        task = stack.wait_final(task_id, timeout=120)
        assert task["status"] == "completed", task
        steps = {s["step_name"]: s for s in task["steps"]}
        assert [steps[name]["status"] for name in STAGE_NAMES] == ["completed"] * 2 + ["skipped"] * 4, steps
        for name in STAGE_NAMES[2:]:
            assert "marked success in Airflow" in steps[name]["error_message"], steps[name]
        assert not runner_processes(stack, task_id, "infer")
    finally:
        if runner.running():
            os.killpg(group, signal.SIGKILL)


def test_cancel_stops_the_runner_on_the_training_server(stack: Stack, launched: Launched) -> None:
    """Cancel during train ends the runner on the training server, not just the Airflow task.
    The runner is frozen (SIGSTOP) once seen, so it cannot finish by itself before the cancel
    lands: only the stage's on_kill (TERM, then CONT) can end it. A cancelled task is final:
    this is the last test on the API task."""
    task_id = launched.api_task
    rerun_train(stack, task_id)
    runner = recorded_runner(stack, task_id)
    group = os.getpgid(runner.pid)
    os.killpg(group, signal.SIGSTOP)
    try:
        demo.api(stack.port, stack.token, "POST", f"/api/workflow/tasks/{task_id}/cancel")
        stack.wait_until("the runner to end", lambda: not runner.running(), timeout=180, every=0.5)
        task = stack.wait_final(task_id)
        assert task["status"] == "cancelled"
        assert stack.step_status(task_id, "train") != "completed"
        assert not runner_processes(stack, task_id, "infer")
    finally:
        if runner.running():
            os.killpg(group, signal.SIGKILL)


# -- data_fetch and data_upload faults, on the retry of the task that failed at data_fetch --


def test_failed_stage_retried_through_hive_and_sshd_faults(stack: Stack, launched: Launched) -> None:
    """A Hive error fails data_fetch with Hive's message and leaves later steps pending; once the
    cause is fixed, `retry` resumes from that stage. During the retry the Hive server dies while
    data_fetch runs and sshd dies mid data_upload, each started again: each stage retries, the
    staged data is not duplicated, no verified chunk is sent again, and the task completes."""
    task_id = launched.failing_task
    launched.dags_test.join(600)  # it uses the Hive server and sshd this test stops
    task = stack.wait_final(task_id)
    assert task["status"] == "failed" and task["current_step"] == 0
    failed = task["steps"][0]
    assert failed["status"] == "failed" and "TABLE_OR_VIEW_NOT_FOUND" in failed["error_message"]
    assert [s["status"] for s in task["steps"][1:]] == ["pending"] * 5
    # the scheduler failed the run, and the plugin's run-failed listener heard it in that process
    scheduler_log = stack.services.airflow_home / "logs" / "scheduler.out"
    heard = f"the workflow follows the failure of DAG run {task['dag_run_id']} of"
    stack.wait_until(
        "the scheduler's listener to hear the run fail",
        lambda: heard in scheduler_log.read_text(errors="replace"),
        timeout=120,
        every=1,
    )
    env = {k: v for k, v in stack.services.env.items() if k.startswith("AIRFLOW_CONN_")}
    source = stack.services.work / "source" / "sample"
    demo.hive_run([f"CREATE TABLE IF NOT EXISTS {LATE_TABLE} USING parquet LOCATION 'file://{source}'"], env)
    with stack.small_chunks():
        demo.api(stack.port, stack.token, "POST", f"/api/workflow/tasks/{task_id}/retry")

        stack.wait_until("data_fetch to run", lambda: stack.step_status(task_id, "data_fetch") == "running")

        def restart_hive() -> None:
            stack.services.hive.stop()
            time.sleep(2)
            stack.services.hive.start()

        # The upload is held from its first agent on, while Hive restarts: once Hive listens again,
        # data_fetch's retry and the whole upload can take a few seconds,
        # less than a busy machine may take to hand the test back from the restart.
        with ThreadPoolExecutor(1) as pool:
            restarted = pool.submit(restart_hive)
            with stack.upload_frozen_part_way(task_id, timeout=600):
                restarted.result()
                stack.services.sshd.stop()
                verified_at_kill = stack.verified_chunks(task_id)
        time.sleep(2)
        stack.services.sshd.start()

        task = stack.assert_completed(task_id)
    assert task["steps"][0]["retry_count"] >= 1
    fetch = json.loads(task["steps"][0]["result"] or "{}")
    rows = {k: v for k, v in fetch.items() if "rows" in k}
    assert rows, f"data_fetch result has no row counts: {fetch}"
    assert sum(v for v in rows.values() if isinstance(v, int)) == SAMPLE_ROWS + INFER_ROWS, rows
    chunks = stack.assert_no_verified_chunk_resent(task_id, verified_at_kill)
    upload = task["steps"][1]
    assert upload["retry_count"] >= 1 or any(c["retry_count"] for c in chunks)


# -- last: `airflow dags test`, started once the first pipelines were done (launch.py) --


def test_airflow_dags_test_runs_all_stages(stack: Stack, launched: Launched) -> None:
    """`airflow dags test fuxictr_workflow -c conf.json` (no scheduler, own Airflow DB) runs the six
    stages; a run without a task id creates its task row; the per-task log directory rotates."""
    run = launched.dags_test
    out = run.result(timeout=540)
    store = WorkflowStore(run.store_url)
    failures = [(t["id"], t["error_message"]) for t in store.list_tasks() if t["error_message"]]
    assert out.returncode == 0, f"{failures}\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
    (task,) = store.list_tasks()
    task = store.get_task(task["id"])
    assert (task["status"], task["current_step"], task["name"]) == ("completed", 5, "dags-test")
    assert all(s["status"] == "completed" and s["started_at"] and s["completed_at"] for s in task["steps"])
    steps_logged = {e["step"] for e in store.logs_after(task["id"], limit=100_000)}
    assert set(STAGE_NAMES) <= steps_logged
    log_files = list((run.root / "log_dir" / f"task_{task['id']}").glob("*.log"))
    assert len(log_files) >= 2, "the log directory did not rotate"
