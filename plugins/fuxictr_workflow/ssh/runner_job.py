"""The runner as a detached job on the training server, seen from Airflow's side.

remote/job.py (shipped with the runner) starts, reports and stops the job there; this
module asks it over SSH and turns the runner's JSON lines into the workflow log. Plain
Python: the stage operator (on a worker) and the trigger (in the triggerer) use the same
:class:`JobFollower`, each with its own way to run a command on the server.
"""

from __future__ import annotations

import json
import posixpath
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fuxictr_workflow.store import EpochRecord
from fuxictr_workflow.workflow_log import WorkflowLogger

# runs one shell command on the training server and returns its stdout (raises on failure)
RunCommand = Callable[[str], str]
LINE_MAX = 2000


@dataclass(frozen=True)
class RemoteJob:
    """remote/job.py for one job directory, through `run`."""

    run: RunCommand
    python: str
    job_py: str
    job_dir: str

    def _call(self, *args: str) -> dict[str, Any]:
        command = " ".join(shlex.quote(a) for a in (self.python, "-S", self.job_py, *args))
        out = self.run(command).strip().splitlines()
        if not out:
            raise RuntimeError(f"job.py {args[0]} printed nothing")
        return json.loads(out[-1])

    def start(self, argv: list[str], *, again: bool = False) -> dict[str, Any]:
        return self._call("start", self.job_dir, *(["--again"] if again else []), "--", *argv)

    def status(self, offset: int) -> dict[str, Any]:
        return self._call("status", self.job_dir, str(int(offset)))

    def stop(self) -> dict[str, Any]:
        return self._call("stop", self.job_dir)


def job_dir(task_dir: str, stage: str) -> str:
    return posixpath.join(task_dir, "jobs", stage)


def ended_at(final: dict[str, Any]) -> datetime | None:
    """When the job ended, by the server's clock (naive UTC, as the store keeps times)."""
    if final.get("ended_at") is None:
        return None
    return datetime.fromtimestamp(float(final["ended_at"]), UTC).replace(tzinfo=None)


@dataclass
class JobLines:
    """What a piece of the job's log said: lines for the workflow log, and the epochs it
    reported (stored, not logged: the epoch's progress line already says its numbers)."""

    logged: list[tuple[str, str]] = field(default_factory=list)
    epochs: list[EpochRecord] = field(default_factory=list)


@dataclass
class RunnerOutput:
    """What the runner's lines said so far: its final metrics, or its error."""

    command: str
    metrics: dict[str, Any] | None = None
    error: str | None = None
    last_line: str = ""

    def read(self, text: str) -> JobLines:
        """Note the lines' metrics or error; returns what they give the workflow log and the store."""
        said = JobLines()
        for line in text.splitlines():
            item = self._read_line(line)
            if isinstance(item, EpochRecord):
                said.epochs.append(item)
            elif item is not None:
                said.logged.append(item)
        return said

    def _read_line(self, line: str) -> tuple[str, str] | EpochRecord | None:
        if not line.strip():
            return None
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            event = None
        if isinstance(event, dict) and event.get("event") == "job_started":  # remote/job.py's
            argv = " ".join(shlex.quote(str(a)) for a in event.get("argv", []))
            where = f"on {event.get('host')} (process group {event.get('pgid')})"
            return "INFO", f"{self.command} job started {where}: {argv}"[:LINE_MAX]
        self.last_line = line
        if not isinstance(event, dict) or "event" not in event:
            return "DEBUG", line[:LINE_MAX]
        kind = event.pop("event")
        if kind == "epoch":
            try:
                return EpochRecord.of(event)
            except (KeyError, TypeError, ValueError) as err:  # kept visible, never a stuck follower
                return "WARNING", f"unreadable epoch line ({err}): {line}"[:LINE_MAX]
        if kind == "progress":
            metric = ", ".join(f"{k} {v:.4f}" for k, v in event.get("metric", {}).items())
            return "INFO", f"epoch {event['epoch']} step {event['step']}: loss {event['loss']:.4f}, {metric}"
        if kind == "metrics":
            self.metrics = event
            return "INFO", f"{self.command} metrics: " + ", ".join(f"{k}={v}" for k, v in event.items())
        if kind == "error":
            self.error = str(event.get("error"))
            return "ERROR", self.error
        return "DEBUG", line[:LINE_MAX]


def job_key(status: dict[str, Any]) -> str | None:
    """Which job a status is of (its supervisor's pid and kernel start time, and its start),
    so that an offset into one job's log is never applied to another's; None before the job
    has recorded itself."""
    if "supervisor_pid" not in status:
        return None
    return f"{status['supervisor_pid']}:{status.get('supervisor_ticks')}:{status.get('started_at')}"


@dataclass
class JobFollower:
    """Reads a running job's new log lines into the workflow log (and its epochs into the
    store), heartbeats the task, and stops the job when the task has been cancelled. One
    :meth:`poll` per call; the caller loops.

    Where the workflow log has got to in the job's log is kept in the store, moved in the same
    transaction that logs the lines and stores the epochs (WorkflowLogger.log_job_lines): a
    follower that takes over (a retried task, a restarted triggerer, a second follower at once)
    resumes exactly there, so no line or epoch is skipped or recorded twice."""

    job: RemoteJob
    task_id: int
    step: str
    logger: WorkflowLogger
    output: RunnerOutput
    final: dict[str, Any] = field(default_factory=dict)
    # epoch seconds after which a running job is stopped (its stage's execution_timeout)
    deadline: float | None = None
    offset: int = 0
    key: str | None = None

    def poll(self) -> bool:
        """Read what is new; True once the job has ended (``final`` then says how)."""
        if self.key is None:
            # this follower's first poll, or another follower logged what this one read: go on
            # from where the store has got to
            self.key, self.offset = self.logger.store.job_log_position(self.task_id, self.step)
        status = self.job.status(self.offset)
        key = job_key(status)
        if key is not None and key != self.key:  # a job whose lines nobody has logged yet
            self.key, self.offset = key, 0
            status = self.job.status(0)
        end = int(status.get("offset", self.offset))
        if key is not None and end > self.offset:
            said = self.output.read(status.get("log", ""))
            if self.logger.log_job_lines(
                self.task_id, self.step, key, self.offset, end, said.logged, said.epochs
            ):
                self.offset = end
            else:
                self.key = None  # the next poll goes on from where the other follower got to
                return False
        store = self.logger.store
        store.heartbeat(self.task_id)
        if (
            status["state"] == "running"
            and store.get_task(self.task_id, with_steps=False)["status"] == "cancelled"
        ):
            self.job.stop()
            self.final = {"state": "cancelled", "exit_code": None}
            return True
        if status["state"] == "running" and self.deadline is not None and time.time() > self.deadline:
            self.job.stop()
            self.final = {"state": "timed_out", "exit_code": None}
            return True
        if status["state"] in ("finished", "none") and not status.get("more"):
            self.final = {
                "state": status["state"],
                "exit_code": status.get("exit_code"),
                "ended_at": status.get("ended_at"),
            }
            return True
        return False
