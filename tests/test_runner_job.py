"""The runner's detached job over the real sshd: started once, found again by a second
starter, its lines followed into the workflow log (and its epochs into the store) without gaps
or repeats across a change of follower, stopped as a whole process group, and a job that already ended well picked up."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fuxictr_workflow.domain import paths
from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.ssh.cancel_jobs import stop_task_jobs
from fuxictr_workflow.ssh.commands import run_command
from fuxictr_workflow.ssh.runner_bundle import job_py, ship_runner
from fuxictr_workflow.ssh.runner_job import JobFollower, JobLines, RemoteJob, RunnerOutput, ended_at, job_dir
from fuxictr_workflow.ssh.servers import endpoint, prepare_remote_root
from fuxictr_workflow.store import EpochRecord, utcnow
from fuxictr_workflow.tracking import track_stage
from fuxictr_workflow.workflow_log import WorkflowLogger
from scripts.processes import ProcessRef
from scripts.sshd import SshdInfo
from tests.conftest import new_task
from tests.transfer_helpers import make_endpoint

JOB_PY = str(Path(__file__).resolve().parents[1] / "plugins" / "fuxictr_workflow" / "remote" / "job.py")

# a stand-in runner: N progress lines, each followed by its epoch's line, a given time apart,
# then metrics (or an error); with a gate file named, it holds after half its lines until that
# file exists
FAKE_RUNNER = """
import json, os, sys, time
n, pause, fail = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "fail"
gate = sys.argv[4] if len(sys.argv) > 4 else None
for i in range(n):
    print(json.dumps({"event": "progress", "epoch": i, "step": i, "loss": 1.0 / (i + 1), "metric": {"AUC": 0.5 + i / 100}}), flush=True)
    print(json.dumps({"event": "epoch", "epoch": i + 1, "step": i, "train_loss": 1.0 / (i + 1), "auc": 0.5 + i / 100, "logloss": 0.7 - i / 100}), flush=True)
    time.sleep(pause)
    while gate and i == n // 2 and not os.path.exists(gate):
        time.sleep(0.05)
if fail:
    print(json.dumps({"event": "error", "error": "experiment X is not in the config"}), flush=True)
    sys.exit(2)
print(json.dumps({"event": "metrics", "AUC": 0.75, "logloss": 0.5}), flush=True)
"""


@pytest.fixture
def remote(sshd: SshdInfo, tmp_path: Path) -> Any:
    client = make_endpoint(sshd, tmp_path).paramiko_client()
    yield client
    client.close()


def job_for(remote: Any, tmp_path: Path) -> RemoteJob:
    return RemoteJob(run_command(remote), sys.executable, JOB_PY, str(tmp_path / "task_1" / "jobs" / "train"))


def argv(tmp_path: Path, n: int, pause: float, fail: bool = False, gate: Path | None = None) -> list[str]:
    script = tmp_path / "fake_runner.py"
    script.write_text(FAKE_RUNNER)
    return [
        sys.executable,
        str(script),
        str(n),
        str(pause),
        "fail" if fail else "ok",
        *([str(gate)] if gate else []),
    ]


def follow(job: RemoteJob, wlogger: WorkflowLogger, task_id: int, polls: int | None = None) -> JobFollower:
    follower = JobFollower(job, task_id, "train", wlogger, RunnerOutput("train"))
    done, count = False, 0
    while not done and (polls is None or count < polls):
        done = follower.poll()
        count += 1
        time.sleep(0.2)
    return follower


def messages(wlogger: WorkflowLogger, task_id: int) -> list[str]:
    return [e["message"] for e in wlogger.store.logs_after(task_id, limit=10_000)]


def fake_epochs(n: int) -> list[EpochRecord]:
    """The epochs FAKE_RUNNER reports for n lines."""
    return [EpochRecord(i + 1, 0.5 + i / 100, 0.7 - i / 100, 1.0 / (i + 1)) for i in range(n)]


def test_runner_output_sorts_lines_into_log_lines_epochs_metrics_and_errors() -> None:
    output = RunnerOutput("train")
    text = "\n".join(
        [
            json.dumps({"event": "job_started", "host": "gpu", "pgid": 7, "argv": ["runner.py", "train"]}),
            json.dumps({"event": "progress", "epoch": 1, "step": 4, "loss": 0.5, "metric": {"AUC": 0.7}}),
            json.dumps(
                {"event": "epoch", "epoch": 1, "step": 4, "train_loss": 0.5, "auc": 0.7, "logloss": 0.6}
            ),
            "",
            "a warning from torch",
            '{"event": "epoch", "epoch": 2, "step": 8, "train_loss": NaN, "auc": null, "logloss": 0.55}',
            json.dumps({"event": "epoch", "epoch": "three", "auc": 0.7}),
            json.dumps({"event": "epoch", "auc": 0.7}),
            json.dumps({"event": "metrics", "auc": 0.71, "model": "DeepFM"}),
        ]
    )
    said = output.read(text)
    assert said.epochs == [EpochRecord(1, 0.7, 0.6, 0.5), EpochRecord(2, None, 0.55, None)]
    assert [level for level, _ in said.logged] == ["INFO", "INFO", "DEBUG", "WARNING", "WARNING", "INFO"]
    assert said.logged[0][1] == "train job started on gpu (process group 7): runner.py train"
    assert said.logged[1][1] == "epoch 1 step 4: loss 0.5000, AUC 0.7000"
    assert "unreadable epoch line" in said.logged[3][1] and "three" in said.logged[3][1]
    assert "unreadable epoch line" in said.logged[4][1]
    assert output.metrics == {"auc": 0.71, "model": "DeepFM"} and output.error is None
    assert output.read(json.dumps({"event": "error", "error": "no such experiment"})) == JobLines(
        [("ERROR", "no such experiment")], []
    )
    assert output.error == "no such experiment"


def test_a_job_is_started_once_and_followed_to_its_metrics(
    remote: Any, tmp_path: Path, wlogger: WorkflowLogger
) -> None:
    task_id = new_task(wlogger.store)
    job = job_for(remote, tmp_path)
    first = job.start(argv(tmp_path, 5, 0.3))
    again = job.start(argv(tmp_path, 5, 0.3))  # a retried task: the same job, not a second one
    assert first["started"] and not again["started"] and again["pid"] == first["pid"]
    follower = follow(job, wlogger, task_id)
    assert {k: follower.final[k] for k in ("state", "exit_code")} == {"state": "finished", "exit_code": 0}
    assert follower.output.metrics == {"AUC": 0.75, "logloss": 0.5}
    logged = messages(wlogger, task_id)
    assert [m for m in logged if m.startswith("epoch")] == [
        f"epoch {i} step {i}: loss {1 / (i + 1):.4f}, AUC {0.5 + i / 100:.4f}" for i in range(5)
    ]
    assert wlogger.store.epochs(task_id, "train") == fake_epochs(5)
    # ended well: starting again reports it (its result is taken), unless a new run is asked for
    assert not job.start(argv(tmp_path, 1, 0))["started"]
    assert job.start(argv(tmp_path, 1, 0), again=True)["started"]


def test_the_job_announces_its_start_once_whoever_follows_it(
    remote: Any, tmp_path: Path, wlogger: WorkflowLogger
) -> None:
    """The task that starts a job can die before it logs anything (a scheduler SIGKILLed right
    after `job.py start`): the start is still logged, once, by whichever follower reads the job
    first, and a follower taking over from the acknowledged offset does not repeat it."""
    task_id = new_task(wlogger.store)
    job = job_for(remote, tmp_path)
    gate = tmp_path / "gate"
    first = job.start(argv(tmp_path, 3, 0.05, gate=gate))
    follow(job, wlogger, task_id, polls=3)  # the starter is gone; a trigger follows
    assert job.start(argv(tmp_path, 3, 0.05, gate=gate))["state"] == "running"  # a retry finds it
    gate.touch()
    follow(job, wlogger, task_id)
    started = [m for m in messages(wlogger, task_id) if m.startswith("train job started")]
    assert len(started) == 1, started
    assert f"(process group {first['pgid']})" in started[0] and "fake_runner.py" in started[0]
    assert os.uname().nodename in started[0]


def test_a_job_seen_ending_late_is_recorded_as_ended_when_it_did(
    remote: Any, tmp_path: Path, wlogger: WorkflowLogger
) -> None:
    """A deferred train/infer resumes only once it gets a pool slot back, maybe minutes after
    its job ended: the step's completed_at is when the job ended, so task_steps never shows
    more trainings overlapping than the pool has slots."""
    task_id = new_task(wlogger.store)
    job = job_for(remote, tmp_path)
    with track_stage(task_id, "train", logger=wlogger, heartbeat_interval=60) as run:
        job.start(argv(tmp_path, 2, 0.1))
        follower = follow(job, wlogger, task_id)
        time.sleep(3)  # the resumed task waits for a slot
        run.ended_at = ended_at(follower.final)
    step = next(s for s in wlogger.store.get_task(task_id)["steps"] if s["step_name"] == "train")
    completed = datetime.fromisoformat(str(step["completed_at"])).replace(tzinfo=None)
    assert run.ended_at is not None and abs((completed - run.ended_at).total_seconds()) < 0.01
    assert (utcnow() - completed).total_seconds() > 2.5


def test_followers_taking_over_log_each_line_once(
    remote: Any, tmp_path: Path, wlogger: WorkflowLogger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower killed between logging a poll's lines and its next poll (a worker or
    triggerer SIGKILLed), one killed before it could log what it read, and two following at
    once: the workflow log has every line of the job exactly once."""
    task_id = new_task(wlogger.store)
    job = job_for(remote, tmp_path)
    gate = tmp_path / "gate"  # the job holds mid-way until the followers below have read some
    job.start(argv(tmp_path, 12, 0.05, gate=gate))
    first = follow(job, wlogger, task_id, polls=4)  # dies after its fourth poll logged lines
    assert first.final == {} and first.offset > 0

    def die(*_args: Any) -> bool:
        raise KeyboardInterrupt  # the process is killed before its lines reach the store

    dying = JobFollower(job, task_id, "train", wlogger, RunnerOutput("train"))
    monkeypatch.setattr(dying.logger, "log_job_lines", die)
    gate.touch()
    time.sleep(0.5)  # new lines for the dying follower to read
    with pytest.raises(KeyboardInterrupt):
        dying.poll()
    monkeypatch.undo()
    a, b = (JobFollower(job, task_id, "train", wlogger, RunnerOutput("train")) for _ in "ab")
    while not (a.poll() | b.poll()):  # both poll every round
        time.sleep(0.1)
    while not (a.poll() & b.poll()):
        time.sleep(0.1)
    logged = messages(wlogger, task_id)
    expected = [f"epoch {i} step {i}: loss {1 / (i + 1):.4f}, AUC {0.5 + i / 100:.4f}" for i in range(12)]
    assert [m for m in logged if m.startswith("epoch")] == expected
    assert len([m for m in logged if m.startswith("train job started")]) == 1
    assert wlogger.store.epochs(task_id, "train") == fake_epochs(12)


def test_stop_ends_the_whole_group_and_records_it(
    remote: Any, tmp_path: Path, wlogger: WorkflowLogger
) -> None:
    job = job_for(remote, tmp_path)
    started = job.start(argv(tmp_path, 1000, 0.1))
    runner = ProcessRef.of(started["pid"])
    stopped = job.stop()
    assert stopped["stopped"] and stopped["state"] == "finished" and stopped["exit_code"] == 143
    assert not runner.running()


def test_a_failed_job_is_started_anew_with_its_error_read(
    remote: Any, tmp_path: Path, wlogger: WorkflowLogger
) -> None:
    task_id = new_task(wlogger.store)
    job = job_for(remote, tmp_path)
    job.start(argv(tmp_path, 1, 0, fail=True))
    follower = follow(job, wlogger, task_id)
    assert follower.final["exit_code"] == 2 and follower.output.error == "experiment X is not in the config"
    assert job.start(argv(tmp_path, 1, 0))["started"]  # a failure is not a result to keep
    assert (
        json.loads((tmp_path / "task_1" / "jobs" / "train" / "job.json.prev").read_text())["argv"][-1]
        == "fail"
    )


def test_cancelling_the_task_stops_the_job(remote: Any, tmp_path: Path, wlogger: WorkflowLogger) -> None:
    task_id = new_task(wlogger.store)
    job = job_for(remote, tmp_path)
    runner = ProcessRef.of(job.start(argv(tmp_path, 1000, 0.1))["pid"])
    wlogger.store.cancel_task(task_id)
    follower = follow(job, wlogger, task_id)
    assert follower.final == {"state": "cancelled", "exit_code": None}
    assert not runner.running()


def test_the_trigger_follows_the_job_into_the_workflow_log(
    sshd: SshdInfo, tmp_path: Path, make_config: Any, remote: Any
) -> None:
    """RunnerJobTrigger's own loop (as the triggerer runs it) against the real sshd: every line
    reaches the workflow log, the task's heartbeat moves, and the final event says how the
    job ended and names the job for the resumed task."""
    import asyncio

    from fuxictr_workflow.orchestration.triggers.runner_job import RunnerJobTrigger
    from fuxictr_workflow.workflow_log import get_logger

    make_config(sshd)
    store = get_logger().store
    store.init()
    task_id = new_task(store)
    job = job_for(remote, tmp_path)
    job.start(argv(tmp_path, 6, 0.3))
    trigger = RunnerJobTrigger(
        task_id=task_id, step="train", command="train", server="local", python=sys.executable,
        job_py=JOB_PY, job_dir=job.job_dir, poll_interval=0.5,
    )  # fmt: skip
    classpath, kwargs = trigger.serialize()
    assert classpath == "fuxictr_workflow.orchestration.triggers.runner_job.RunnerJobTrigger"

    async def first_event() -> Any:
        async for event in RunnerJobTrigger(**kwargs).run():
            return event.payload

    before = store.get_task(task_id, with_steps=False)["heartbeat_at"]
    payload = asyncio.run(asyncio.wait_for(first_event(), 120))
    assert payload["state"] == "finished" and payload["exit_code"] == 0
    assert payload["job"]["job_dir"] == job.job_dir
    epochs = [m for m in messages(get_logger(), task_id) if m.startswith("epoch")]
    assert len(epochs) == 6
    assert store.epochs(task_id, "train") == fake_epochs(6)
    assert store.get_task(task_id, with_steps=False)["heartbeat_at"] != before


def test_the_trigger_stops_a_job_past_its_stages_execution_timeout(
    sshd: SshdInfo, tmp_path: Path, make_config: Any, remote: Any
) -> None:
    """A deferred train has no Airflow timeout (Airflow applies execution_timeout to a worker's
    part only): the trigger stops a job still running at its deadline and says so."""
    import asyncio

    from fuxictr_workflow.orchestration.triggers.runner_job import RunnerJobTrigger
    from fuxictr_workflow.workflow_log import get_logger

    make_config(sshd)
    store = get_logger().store
    store.init()
    task_id = new_task(store)
    job = job_for(remote, tmp_path)
    gate = tmp_path / "never"  # the job holds half-way until it is stopped
    job.start(argv(tmp_path, 6, 0.0, gate=gate))
    trigger = RunnerJobTrigger(
        task_id=task_id, step="train", command="train", server="local", python=sys.executable,
        job_py=JOB_PY, job_dir=job.job_dir, poll_interval=0.5, deadline=time.time() - 1,
    )  # fmt: skip

    async def first_event() -> Any:
        async for event in RunnerJobTrigger(**trigger.serialize()[1]).run():
            return event.payload

    payload = asyncio.run(asyncio.wait_for(first_event(), 120))
    assert payload["state"] == "timed_out"
    status = job.status(0)
    assert status["state"] == "finished" and status["exit_code"] != 0


def test_cancel_stops_the_tasks_jobs_from_outside_any_stage(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo, tmp_path: Path
) -> None:
    """What the cancel route does before failing the Airflow run: the task's running train job
    is stopped over the server's connection, with no operator or trigger following it."""
    cfg = make_config(sshd)
    ep = endpoint(cfg, "local")
    with ep.paramiko_client() as client:
        root = prepare_remote_root(ep, client).remote_root
        ship_runner(client, root)
        job = RemoteJob(
            run_command(client),
            sys.executable,
            job_py(root),
            job_dir(paths.remote_task_dir(root, 7), "train"),
        )
        started = job.start(argv(tmp_path, 1000, 0.2))
    runner = ProcessRef.of(int(started["pid"]))
    assert stop_task_jobs(cfg, 7, "local") == {"train": "finished"}
    assert not runner.running()
    assert stop_task_jobs(cfg, 8, "local") == {}  # a task that never started a job
