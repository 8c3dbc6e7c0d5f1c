"""End to end through the real processes: sshd, Spark Thrift Server, Airflow api-server +
scheduler + dag-processor (LocalExecutor), FuXiCTR training — the `make demo` stack on
smaller data — plus pipeline-level fault tests: each kills a real process mid-stage and
checks that nothing is lost and the task still completes.

The package's stack (tests/e2e/conftest.py) serves the module; each test submits its own
task through the REST API.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from fuxictr_workflow import paths, runner_job
from fuxictr_workflow.dag_params import dag_id_for
from fuxictr_workflow.stages import STAGE_NAMES
from fuxictr_workflow.store import WorkflowStore
from scripts import airflow_stack, demo
from scripts.processes import ProcessRef
from tests.e2e.stack import INFER_ROWS, SAMPLE_ROWS, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


class LogFollower(threading.Thread):
    """A WebSocket client following one task's log, reconnecting with `after` on drops."""

    def __init__(self, stack: Stack, task_id: int) -> None:
        super().__init__(daemon=True)
        self.stack, self.task_id = stack, task_id
        self.events: list[dict[str, Any]] = []
        self.reconnects = 0
        self.closed_normally = False

    def run(self) -> None:
        asyncio.run(self._follow())

    async def _follow(self) -> None:
        import websockets

        base = f"ws://127.0.0.1:{self.stack.port}/api/workflow/tasks/{self.task_id}/logs?token={self.stack.token}"
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            try:
                async with websockets.connect(f"{base}&after={len(self.events)}", open_timeout=10) as ws:
                    async for raw in ws:
                        self.events.append(json.loads(raw))
                    self.closed_normally = ws.close_code == 1000
                    return
            except (OSError, websockets.ConnectionClosedError, websockets.InvalidStatus, TimeoutError):
                self.reconnects += 1
                await asyncio.sleep(0.5)


def assert_stage_sequence(events: list[dict[str, Any]], task_id: int) -> None:
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


def test_pipeline_end_to_end(stack: Stack) -> None:
    task_id = stack.submit("e2e")
    follower = LogFollower(stack, task_id)
    follower.start()
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


def test_sshd_killed_during_upload_resumes(stack: Stack) -> None:
    """sshd dies mid data_upload and comes back: the stage retries, re-sending no verified chunk."""
    task_id = stack.submit("fault-sshd")
    stack.wait_upload_part_way(task_id)
    stack.services.sshd.stop()
    verified_at_kill = stack.verified_chunks(task_id)
    time.sleep(2)
    stack.services.sshd.start()
    stack.assert_completed(task_id)
    chunks = stack.assert_no_verified_chunk_resent(task_id, verified_at_kill)
    upload = next(s for s in stack.store.get_task(task_id)["steps"] if s["step_name"] == "data_upload")
    assert upload["retry_count"] >= 1 or any(c["retry_count"] for c in chunks)


def test_hive_killed_during_fetch_recovers(stack: Stack) -> None:
    """The Hive server dies while data_fetch runs and is started again: the stage retries and
    completes, with the staged data not duplicated."""
    task_id = stack.submit("fault-hive")
    stack.wait_until("data_fetch to run", lambda: stack.step_status(task_id, "data_fetch") == "running")
    stack.services.hive.stop()
    time.sleep(2)
    stack.services.hive.start()
    task = stack.assert_completed(task_id)
    fetch = json.loads(next(s["result"] for s in task["steps"] if s["step_name"] == "data_fetch") or "{}")
    rows = {k: v for k, v in fetch.items() if "rows" in k}
    assert rows, f"data_fetch result has no row counts: {fetch}"
    assert sum(v for v in rows.values() if isinstance(v, int)) == SAMPLE_ROWS + INFER_ROWS, rows


def test_scheduler_killed_mid_train_continues(stack: Stack) -> None:
    """The scheduler (and with it the running task process) dies during train and is started
    again: the run continues to completion."""
    task_id = stack.submit("fault-scheduler")
    stack.wait_until("train to run", lambda: stack.step_status(task_id, "train") == "running", timeout=600)
    home = stack.services.airflow_home
    airflow_stack.stop_one(home, "scheduler", sig=9)
    time.sleep(3)
    airflow_stack.start_one(home, "scheduler", stack.services.env)
    stack.assert_completed(task_id)


def runner_processes(task_id: int, command: str) -> list[ProcessRef]:
    """The runner processes working on `command` for the task on the training server (this machine)."""
    marker = f"/{paths.task_dirname(task_id)}/"
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


def train_job(stack: Stack, task_id: int) -> Path:
    return Path(
        runner_job.job_dir(paths.remote_task_dir(str(stack.services.work / "server"), task_id), "train")
    )


def assert_trained_once(stack: Stack, task_id: int, runner: ProcessRef) -> None:
    """The train job that ran to the end is the one first seen: same pid, same kernel start
    time, never restarted (a restart would have kept the first run as job.json.prev)."""
    job = json.loads((train_job(stack, task_id) / "job.json").read_text())
    assert job["pid"] == runner.pid
    assert not (train_job(stack, task_id) / "job.json.prev").exists()
    ticks = [
        e["message"]
        for e in stack.store.logs_after(task_id, limit=100_000)
        if "train job started" in e["message"]
    ]
    assert len(ticks) == 1, ticks


def train_task_instance_path(stack: Stack, task_id: int) -> str:
    """Airflow's REST path of the workflow task's train task instance."""
    task = stack.store.get_task(task_id, with_steps=False)
    cfg = stack.config()
    dag_id = dag_id_for(task["server"] or cfg.default_server, cfg.default_server)
    return f"/api/v2/dags/{dag_id}/dagRuns/{quote(task['dag_run_id'], safe='')}/taskInstances/train"


def recorded_train_runner(stack: Stack, task_id: int) -> ProcessRef:
    """The task's train runner once its job has recorded it (job.json names its pid). The
    runner shows in /proc a moment before its supervisor writes job.json; a runner frozen
    inside that moment would freeze its supervisor too, and `job.py start` would wait in vain
    for the job to record itself."""

    def recorded() -> bool:
        found = runner_processes(task_id, "train")
        job = train_job(stack, task_id) / "job.json"
        try:
            return len(found) == 1 and json.loads(job.read_text())["pid"] == found[0].pid
        except (OSError, ValueError, KeyError):
            return False

    stack.wait_until("the train runner to be recorded", recorded, 600, 0.02)
    (runner,) = runner_processes(task_id, "train")
    return runner


def freeze_followed_runner(stack: Stack, task_id: int, ti_state: str) -> tuple[ProcessRef, int]:
    """Freeze (SIGSTOP) the task's train runner as soon as its job is recorded, so it cannot
    end by itself (the demo training takes 3 s on a quiet machine), then wait until train's task
    instance is in `ti_state` and something follows the job (the task's heartbeat moves after
    that: the trigger's or the worker's polls). Returns the runner and its process group; the
    caller sends SIGCONT to the group once the fault is in place."""
    runner = recorded_train_runner(stack, task_id)
    group = os.getpgid(runner.pid)
    os.killpg(group, signal.SIGSTOP)
    path = train_task_instance_path(stack, task_id)
    stack.wait_until(
        f"train to be {ti_state}",
        lambda: demo.api(stack.port, stack.token, "GET", path)["state"] == ti_state,
        300,
        0.5,
    )
    beat = stack.store.get_task(task_id, with_steps=False)["heartbeat_at"]
    stack.wait_until(
        "the job to be followed",
        lambda: stack.store.get_task(task_id, with_steps=False)["heartbeat_at"] != beat,
        300,
        0.2,
    )
    return runner, group


def test_triggerer_killed_mid_train_follows_the_same_job(stack: Stack) -> None:
    """While train runs the task is deferred: the triggerer follows the job. SIGKILL it and
    start it again: the training is not restarted, and the task completes."""
    task_id = stack.submit("fault-triggerer")
    runner = recorded_train_runner(stack, task_id)
    home = stack.services.airflow_home
    airflow_stack.stop_one(home, "triggerer", sig=9)
    time.sleep(3)
    airflow_stack.start_one(home, "triggerer", stack.services.env)
    stack.assert_completed(task_id)
    assert_trained_once(stack, task_id, runner)


def airflow_task_process(stack: Stack, task_id: int, stage: str) -> ProcessRef | None:
    """The Airflow task process running `stage` of the workflow task (LocalExecutor titles it
    ``airflow worker -- <task instance id>``), if one runs."""
    cfg = stack.config()
    dag_id = dag_id_for(
        stack.store.get_task(task_id, with_steps=False)["server"] or cfg.default_server, cfg.default_server
    )
    run_id = stack.store.get_task(task_id, with_steps=False)["dag_run_id"]
    path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{stage}"
    ti_id = demo.api(stack.port, stack.token, "GET", path)["id"]
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            if entry.name.isdigit() and title == f"airflow worker -- {ti_id}":
                return ProcessRef.of(int(entry.name))
        except OSError:
            continue
    return None


def test_worker_killed_mid_train_follows_the_same_job(stack: Stack) -> None:
    """With train followed from its worker slot (`task.follow_jobs_from: worker`), SIGKILL the
    Airflow task process mid-train: its next try finds the job running and follows it; the
    training is not restarted and the task completes."""
    with stack.config_changed({"task": {"follow_jobs_from": "worker"}}):
        task_id = stack.submit("fault-worker")
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
                    for e in stack.store.logs_after(task_id, limit=100_000)
                ),
                600,
                0.5,
            )
        finally:
            os.killpg(group, signal.SIGCONT)
        stack.assert_completed(task_id)
    assert_trained_once(stack, task_id, runner)


def test_ssh_sessions_cut_mid_train_are_reattached(stack: Stack) -> None:
    """Every SSH session to the training server is cut while train runs (the listener stays):
    the job does not depend on them, the follower reconnects, and the task completes."""
    task_id = stack.submit("fault-ssh-sessions")
    # the trigger follows the job (once the task deferred) and keeps its connection open between polls
    runner, group = freeze_followed_runner(stack, task_id, "deferred")
    try:
        stack.wait_until(
            "the follower's SSH connection", lambda: bool(stack.services.sshd.sessions()), 60, 0.1
        )
        assert stack.services.sshd.kill_sessions() >= 1
        assert runner.running(), "cutting the SSH sessions ended the training"
    finally:
        os.killpg(group, signal.SIGCONT)
    stack.assert_completed(task_id)
    assert_trained_once(stack, task_id, runner)


def test_cancel_stops_the_runner_on_the_training_server(stack: Stack) -> None:
    """Cancel during train ends the runner on the training server, not just the Airflow task.
    The runner is frozen (SIGSTOP) once seen, so it cannot finish by itself before the cancel
    lands: only the stage's on_kill (TERM, then CONT) can end it."""
    task_id = stack.submit("cancel-train")
    runner = recorded_train_runner(stack, task_id)
    group = os.getpgid(runner.pid)
    os.killpg(group, signal.SIGSTOP)
    try:
        demo.api(stack.port, stack.token, "POST", f"/api/workflow/tasks/{task_id}/cancel")
        stack.wait_until("the runner to end", lambda: not runner.running(), timeout=180, every=0.5)
        task = stack.wait_final(task_id)
        assert task["status"] == "cancelled"
        assert stack.step_status(task_id, "train") != "completed"
        assert not runner_processes(task_id, "infer")
    finally:
        if runner.running():
            os.killpg(group, signal.SIGKILL)


@pytest.mark.parametrize("follower", ["triggerer", "worker", "none"])
def test_mark_failed_in_airflow_stops_the_runner(stack: Stack, follower: str) -> None:
    """A user marks train failed in Airflow (its REST API, as the UI does) mid-train: the
    runner on the training server ends, the step fails saying so, the task fails with it (so
    clearing train in Airflow runs it again) and no later stage runs. Whoever follows the job
    stops it: the trigger's on_kill, the operator's when followed from a worker slot, and the
    DAG's failure callback when nothing follows it (the triggerer is down)."""
    home = stack.services.airflow_home
    follow_from = "worker" if follower == "worker" else "triggerer"
    with stack.config_changed({"task": {"follow_jobs_from": follow_from}}):
        task_id = stack.submit(f"mark-failed-{follower}")
        runner, group = freeze_followed_runner(
            stack, task_id, "running" if follower == "worker" else "deferred"
        )
        try:
            path = train_task_instance_path(stack, task_id)
            if follower == "none":
                airflow_stack.stop_one(home, "triggerer")
            demo.api(stack.port, stack.token, "PATCH", path, {"new_state": "failed"})
            stack.wait_until("the runner to end", lambda: not runner.running(), timeout=180, every=0.5)
            task = stack.wait_final(task_id, timeout=300)
            assert task["status"] == "failed", task
            (train,) = (s for s in task["steps"] if s["step_name"] == "train")
            assert train["status"] == "failed" and "marked failed" in train["error_message"], train
            assert "job on the training server was stopped" in train["error_message"], train
            assert not runner_processes(task_id, "infer")
            # the follower's on_kill acted (the DAG's failure callback may have closed the step first)
            marked = "train was marked failed in Airflow; its job on the training server was stopped"
            said = [e["message"] for e in stack.store.logs_after(task_id, limit=100_000)]
            assert (marked in said) is (follower != "none"), said[-10:]
        finally:
            if runner.running():
                os.killpg(group, signal.SIGKILL)
            if follower == "none":
                airflow_stack.start_one(home, "triggerer", stack.services.env)
    if follower == "triggerer":
        # what the failed step promises: clearing train (and what follows) in Airflow runs it again
        clear_train(stack, task_id, "failed")
        stack.wait_until(
            "train to start again",
            lambda: stack.store.get_task(task_id, with_steps=False)["status"] == "running",
            300,
            0.5,
        )
        stack.assert_completed(task_id)


def clear_train(stack: Stack, task_id: int, run_state: str) -> None:
    """Clear train and its downstream task instances in the task's run, as the UI's Clear does,
    once the UI shows the run in `run_state`. After a failure that is "failed": the store
    records the failure before the scheduler has marked the downstream stages upstream_failed
    and the run failed, and a clear inside that window loses to the scheduler (the run ends
    failed with train never queued again)."""
    path = train_task_instance_path(stack, task_id)
    dag_id, run_id = path.split("/")[4], stack.store.get_task(task_id, with_steps=False)["dag_run_id"]
    run_path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
    stack.wait_until(
        f"Airflow to show the run {run_state}",
        lambda: demo.api(stack.port, stack.token, "GET", run_path)["state"] == run_state,
        120,
        0.5,
    )
    body = {
        "dry_run": False,
        "task_ids": ["train"],
        "dag_run_id": run_id,
        "include_downstream": True,
        "only_failed": False,
    }
    demo.api(stack.port, stack.token, "POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", body)


def test_clear_mid_train_follows_the_same_job(stack: Stack) -> None:
    """A user clears train in Airflow while it trains: the job is left running (the trigger's
    on_kill sees a cleared task instance), the next try follows it, and the training is not
    restarted. The runner is frozen meanwhile, so it cannot end by itself before the clear."""
    task_id = stack.submit("clear-train")
    runner, group = freeze_followed_runner(stack, task_id, "deferred")
    try:
        path = train_task_instance_path(stack, task_id)
        state = lambda: demo.api(stack.port, stack.token, "GET", path)  # noqa: E731
        clear_train(stack, task_id, "running")
        stack.wait_until(
            "train's next try to follow the job",
            lambda: state()["try_number"] > 1 and state()["state"] == "deferred",
            300,
            0.5,
        )
        assert runner.running(), "clearing train ended the training"
    finally:
        os.killpg(group, signal.SIGCONT)
    stack.assert_completed(task_id)
    assert_trained_once(stack, task_id, runner)


def test_api_server_restart_while_following(stack: Stack) -> None:
    """The API server restarts while a WebSocket client follows: it reconnects and the log it
    has has no gap and no duplicate."""
    task_id = stack.submit("fault-api")
    follower = LogFollower(stack, task_id)
    follower.start()
    stack.wait_until("some log lines", lambda: len(follower.events) >= 3, timeout=300)
    home = stack.services.airflow_home
    airflow_stack.stop_one(home, "api-server")
    time.sleep(2)
    airflow_stack.start_one(home, "api-server", stack.services.env)
    airflow_stack.wait_healthy(stack.port)
    stack.assert_completed(task_id)
    follower.join(180)
    assert follower.reconnects >= 1
    stored = [e["message"] for e in stack.store.logs_after(task_id, limit=100_000)]
    assert [e["message"] for e in follower.events] == stored


def test_failed_stage_then_retry_resumes(stack: Stack) -> None:
    """A Hive error fails data_fetch with Hive's message and leaves later steps pending; once the
    cause is fixed, `retry` resumes from that stage and the task completes."""
    body = {**demo.SEED_BODY, "name": "retry", "hdfs_path": str(stack.services.work / "hdfs"),
            "sample_sql": "SELECT * FROM demo.ctr_late WHERE dt = '2024-01-01'"}  # fmt: skip
    task_id = demo.api(stack.port, stack.token, "POST", "/api/workflow/tasks", body)["task_id"]
    task = stack.wait_final(task_id)
    assert task["status"] == "failed" and task["current_step"] == 0
    failed = task["steps"][0]
    assert failed["status"] == "failed" and "TABLE_OR_VIEW_NOT_FOUND" in failed["error_message"]
    assert [s["status"] for s in task["steps"][1:]] == ["pending"] * 5
    env = {k: v for k, v in stack.services.env.items() if k.startswith("AIRFLOW_CONN_")}
    source = stack.services.work / "source" / "sample"
    demo.hive_run([f"CREATE TABLE IF NOT EXISTS demo.ctr_late USING parquet LOCATION 'file://{source}'"], env)
    demo.api(stack.port, stack.token, "POST", f"/api/workflow/tasks/{task_id}/retry")
    task = stack.assert_completed(task_id)
    assert task["steps"][0]["retry_count"] >= 1


def test_airflow_dags_test_runs_all_stages(stack: Stack, tmp_path: Path) -> None:
    """`airflow dags test fuxictr_workflow -c conf.json` (no scheduler, own Airflow DB) runs the six
    stages; a run without a task id creates its task row; the per-task log directory rotates."""
    config = yaml.safe_load((stack.services.work / "config.yaml").read_text())
    config["task"]["log_rotation_size"] = 4096
    config["store"]["url"] = f"sqlite:///{tmp_path / 'workflow.db'}"
    config["storage"] = {k: str(tmp_path / k) for k in ("staging_dir", "log_dir")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    conf = {**demo.SEED_BODY, "name": "dags-test", "hdfs_path": str(tmp_path / "hdfs")}
    (tmp_path / "conf.json").write_text(json.dumps(conf))
    env = {
        **stack.services.env,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "FUXICTR_WORKFLOW_CONFIG": str(tmp_path / "config.yaml"),
    }
    airflow = str(airflow_stack.VENV_BIN / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    out = subprocess.run(
        [airflow, "dags", "test", "fuxictr_workflow", "-c", (tmp_path / "conf.json").read_text()],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    store = WorkflowStore(config["store"]["url"])
    (task,) = store.list_tasks()
    task = store.get_task(task["id"])
    assert (task["status"], task["current_step"], task["name"]) == ("completed", 5, "dags-test")
    assert all(s["status"] == "completed" and s["started_at"] and s["completed_at"] for s in task["steps"])
    steps_logged = {e["step"] for e in store.logs_after(task["id"], limit=100_000)}
    assert set(STAGE_NAMES) <= steps_logged
    log_files = list((tmp_path / "log_dir" / f"task_{task['id']}").glob("*.log"))
    assert len(log_files) >= 2, "the log directory did not rotate"
