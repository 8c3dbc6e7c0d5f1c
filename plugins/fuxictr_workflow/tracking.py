"""Stage lifecycle -> store: start, heartbeat, complete with a result, fail with a reason.

Plain Python (no Airflow): the operators wrap their work in :func:`track_stage`. A stage
that spans several Airflow tasks opens the step in its first task and closes it in its
last (``closes_step=False`` for the earlier ones). A stage run ``alone`` (one stage of an
existing task re-run by itself) is not retried and leaves the task in the status its steps
say; its first part alone leaves the step pending for the second.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fuxictr_workflow.domain.stages import StepStatus, TaskStatus, stage
from fuxictr_workflow.store import utcnow
from fuxictr_workflow.store.errors import IllegalTransition
from fuxictr_workflow.workflow_log import WorkflowLogger

ERROR_MESSAGE_MAX = 4000

log = logging.getLogger(__name__)


class StageError(RuntimeError):
    """A stage failed for a reason the user can act on; the message is shown as is.

    retryable=False (bad input, unknown experiment ...) fails the task at once: retrying
    cannot help.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class TaskCancelled(StageError):
    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def error_message(exc: BaseException) -> str:
    """What goes into task_steps.error_message: the user-facing reason, not a traceback."""
    text = str(exc).strip() if isinstance(exc, StageError) else f"{type(exc).__name__}: {exc}".strip()
    return text[:ERROR_MESSAGE_MAX]


@dataclass
class StageRun:
    """Handle the stage code gets: logging, a JSON result for the step, cancellation."""

    task_id: int
    step: str
    logger: WorkflowLogger
    result: dict[str, Any] = field(default_factory=dict)
    cancelled: threading.Event = field(default_factory=threading.Event)
    suspended: bool = False
    # when the stage's work ended, if before this process closes the step: a deferred job's
    # task resumes only once it gets a pool slot again, which may be minutes after the job ended
    ended_at: datetime | None = None

    def log(self, level: str, message: str) -> None:
        self.logger.log(self.task_id, self.step, level, message)

    def info(self, message: str) -> None:
        self.log("INFO", message)

    def warning(self, message: str) -> None:
        self.log("WARNING", message)

    def error(self, message: str) -> None:
        self.log("ERROR", message)

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise TaskCancelled(f"task {self.task_id} was cancelled")

    def suspend(self, waiting_for: Any) -> Suspended:
        """End this part of the stage with the step still running: the caller hands
        ``waiting_for`` (a trigger) to Airflow and the stage resumes when it fires."""
        self.suspended = True
        return Suspended(waiting_for)


@dataclass(frozen=True)
class Suspended:
    """A stage body's return value: the step stays running until ``waiting_for`` fires."""

    waiting_for: Any


def _heartbeat(run: StageRun, interval: float, stop: threading.Event) -> None:
    store = run.logger.store
    while not stop.wait(interval):
        try:
            store.heartbeat(run.task_id)
            if store.get_task(run.task_id, with_steps=False)["status"] == TaskStatus.CANCELLED:
                run.cancelled.set()
        except Exception:  # a missed heartbeat must never fail the stage itself
            log.warning(
                "task %s step %s: heartbeat failed; the stage goes on", run.task_id, run.step, exc_info=True
            )


@contextmanager
def _unless_overtaken(run: StageRun, attempt: int) -> Iterator[None]:
    """A try Airflow has moved on from (marked or cleared, its process given seconds to end) can
    report after the next try started the step again, or after the mark was recorded in the
    step (airflow_stops): the step is the later attempt's, or the mark's, and this try's
    outcome is only logged."""
    try:
        yield
    except IllegalTransition as err:  # StaleAttempt is one
        run.warning(f"not recorded: {err}")


@contextmanager
def track_stage(
    task_id: int,
    step: str,
    *,
    logger: WorkflowLogger,
    heartbeat_interval: float,
    will_retry: bool = False,
    opens_step: bool = True,
    closes_step: bool = True,
    alone: bool = False,
) -> Iterator[StageRun]:
    """Run one stage (or one part of it) with its lifecycle recorded in the store."""
    stage(step)
    store = logger.store
    run = StageRun(task_id, step, logger)
    current = next(s for s in store.get_task(task_id)["steps"] if s["step_name"] == step)
    # A later part of a stage joins the running step; it (re)starts it only after a failure.
    if opens_step or current["status"] != StepStatus.RUNNING:
        attempt = store.start_step(task_id, step, alone=alone)
        run.info(f"{step} started" + (f" (retry {attempt})" if attempt else ""))
        started = utcnow()
    else:  # a later part: the stage's duration counts from its first part
        attempt = int(current["retry_count"])
        started = current["started_at"] or utcnow()
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(run, heartbeat_interval, stop), daemon=True)
    beat.start()
    try:
        yield run
    except TaskCancelled:
        # cancel_task has already closed the step ("cancelled by user"); nothing to record twice
        run.info(f"{step} stopped: the task was cancelled")
        raise
    except BaseException as exc:
        reason = error_message(exc)
        will_retry = will_retry and not alone and getattr(exc, "retryable", True)
        # the event goes first: a WebSocket closes once the task is final, after its last event
        run.error(f"{step} failed: {reason}" + ("; it will be retried" if will_retry else ""))
        with _unless_overtaken(run, attempt):
            store.fail_step(task_id, step, reason, final=not will_retry, attempt=attempt)
        raise
    else:
        if run.suspended:
            run.info(f"{step} goes on on the training server; followed without holding a worker")
        elif closes_step:
            # another machine's clock said when the job ended: keep it within this step's run
            ended = min(max(run.ended_at or utcnow(), started), utcnow())
            seconds = (ended - started).total_seconds()
            run.result.setdefault("seconds", round(seconds, 3))
            run.info(f"{step} finished in {seconds:.1f}s")
            with _unless_overtaken(run, attempt):
                store.complete_step(
                    task_id, step, run.result, alone=alone, completed_at=ended, attempt=attempt
                )
        elif alone:
            run.info(f"{step}: first part done; the stage completes when its second part runs")
            with _unless_overtaken(run, attempt):
                store.pause_step(task_id, step, attempt=attempt)
    finally:
        stop.set()
        beat.join(timeout=5)
