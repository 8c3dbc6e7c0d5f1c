"""The step state machine, and the task status each step change settles.

Every state change is a named operation that checks the transition it makes; callers never
write rows directly.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fuxictr_workflow.domain.stages import RETRYABLE_TASK_STATUSES, STAGE_NAMES, StepStatus, TaskStatus, stage
from fuxictr_workflow.store.database import Database, quality_gates, task_steps, utcnow
from fuxictr_workflow.store.errors import IllegalTransition, NotFound, StaleAttempt
from fuxictr_workflow.store.tasks import Tasks

# step status -> statuses it may move to. Restarting a running step is how a worker that
# died mid-stage is recovered (Airflow retries it); resetting to pending is `retry`.
# Completing, failing or pausing needs a running step.
_STEP_TRANSITIONS: dict[str, frozenset[str]] = {
    StepStatus.PENDING: frozenset({StepStatus.RUNNING, StepStatus.SKIPPED}),
    # running -> pending: the first part of a two-part stage run alone (`pause_step`)
    StepStatus.RUNNING: frozenset(
        {StepStatus.RUNNING, StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.PENDING}
    ),
    # failed -> skipped: a user marked the stage's task instance success (or skipped) in Airflow
    StepStatus.FAILED: frozenset({StepStatus.RUNNING, StepStatus.PENDING, StepStatus.SKIPPED}),
    # completed -> running: an explicit re-run of one stage (`airflow tasks test ... -t '{"task_id": N}'`)
    StepStatus.COMPLETED: frozenset({StepStatus.PENDING, StepStatus.RUNNING}),
    StepStatus.SKIPPED: frozenset({StepStatus.PENDING, StepStatus.RUNNING}),
}


class Steps:
    """A task's six steps: start, complete, fail, pause, and reset for a retry."""

    def __init__(self, db: Database, tasks: Tasks) -> None:
        self.db = db
        self.tasks = tasks

    def _transition(
        self,
        conn: Connection,
        task_id: int,
        step_name: str,
        new: StepStatus,
        attempt: int | None = None,
        **values: Any,
    ) -> dict[str, Any]:
        stage(step_name)
        row = (
            conn.execute(
                sa.select(task_steps).where(
                    task_steps.c.task_id == task_id, task_steps.c.step_name == step_name
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(f"task {task_id} has no step {step_name!r} (does the task exist?)")
        if attempt is not None and row["retry_count"] != attempt:
            raise StaleAttempt(
                f"task {task_id} step {step_name}: attempt {attempt} was overtaken by attempt "
                f"{row['retry_count']}, which runs the step now"
            )
        if new not in _STEP_TRANSITIONS[row["status"]]:
            raise IllegalTransition(
                f"task {task_id} step {step_name}: cannot go from {row['status']} to {new}"
            )
        conn.execute(task_steps.update().where(task_steps.c.id == row["id"]).values(status=new, **values))
        return dict(row)

    def start_step(self, task_id: int, step_name: str, *, alone: bool = False) -> int:
        """Mark a step running (a re-start after failure counts as a retry). Returns retry_count.

        In a pipeline run the later steps go back to pending: their results came from this
        stage's earlier output (a user cleared it with its downstream tasks in Airflow), and
        until they run again the task must not read as completed, or failed, from them. A
        stage run ``alone`` leaves the other steps as they are."""
        now = utcnow()

        def run(conn: Connection) -> int:
            task = self.tasks.row(conn, task_id)
            if task.status == TaskStatus.CANCELLED:
                raise IllegalTransition(f"task {task_id} was cancelled")
            # Starting again after a failure, or after a worker died mid-step, is a retry.
            again = sa.case((task_steps.c.status.in_([StepStatus.FAILED, StepStatus.RUNNING]), 1), else_=0)
            self._transition(
                conn,
                task_id,
                step_name,
                StepStatus.RUNNING,
                started_at=now,
                completed_at=None,
                error_message=None,
                retry_count=task_steps.c.retry_count + again,
            )
            if not alone:
                later = STAGE_NAMES[stage(step_name).index + 1 :]
                self._to_pending(conn, task_id, later, keep_running=True)
            self.tasks.update(
                task_id,
                conn,
                status=TaskStatus.RUNNING,
                current_step=stage(step_name).index,
                heartbeat_at=now,
                completed_at=None,
                error_message=None,
            )
            return int(
                conn.execute(
                    sa.select(task_steps.c.retry_count).where(
                        task_steps.c.task_id == task_id, task_steps.c.step_name == step_name
                    )
                ).scalar_one()
            )

        return self.db.write(run)

    def complete_step(
        self,
        task_id: int,
        step_name: str,
        result: dict[str, Any] | None = None,
        *,
        alone: bool = False,
        completed_at: datetime | None = None,
        attempt: int | None = None,
    ) -> None:
        """Mark a running step completed (at ``completed_at``, when its work ended earlier than
        now). In a pipeline run the task stays running until its last stage completes; a step
        run ``alone`` (one stage re-run by itself) leaves the task in the status its steps say
        (see :meth:`_settle_task`). With ``attempt`` (the retry count :meth:`start_step` gave),
        a step another attempt has started since is left to it: :class:`StaleAttempt`."""
        now = completed_at or utcnow()

        def run(conn: Connection) -> None:
            values: dict[str, Any] = {"completed_at": now}
            if result is not None:
                values["result"] = json.dumps(result, default=str)
            self._transition(conn, task_id, step_name, StepStatus.COMPLETED, attempt, **values)
            self._settle_task(
                conn, task_id, step_name, run_goes_on=not alone and step_name != STAGE_NAMES[-1]
            )

        self.db.write(run)

    def fail_step(
        self,
        task_id: int,
        step_name: str,
        error_message: str,
        *,
        final: bool = True,
        attempt: int | None = None,
    ) -> None:
        """Mark a running step failed. final=False (Airflow will retry) leaves the task running;
        a final failure fails the task, its error naming the stage. ``attempt``: as for
        :meth:`complete_step`."""
        now = utcnow()

        def run(conn: Connection) -> None:
            self._transition(
                conn,
                task_id,
                step_name,
                StepStatus.FAILED,
                attempt,
                error_message=error_message,
                completed_at=now,
            )
            if final:
                self._settle_task(conn, task_id, step_name, run_goes_on=False)
            else:
                self.tasks.update(task_id, conn)

        self.db.write(run)

    def pause_step(self, task_id: int, step_name: str, *, attempt: int | None = None) -> None:
        """A running step goes back to pending with its work part-done: the first part of a
        two-part stage run alone, whose second part has yet to run. The task settles as for
        :meth:`complete_step` ``alone``."""

        def run(conn: Connection) -> None:
            self._transition(conn, task_id, step_name, StepStatus.PENDING, attempt, completed_at=None)
            self._settle_task(conn, task_id, step_name, run_goes_on=False)

        self.db.write(run)

    def skip_steps(self, task_id: int, reasons: Mapping[str, str], *, run_goes_on: bool) -> list[str]:
        """Airflow counts these stages done though their work did not finish (a user marked their
        task instances, or the whole run, success or skipped): each step not completed becomes
        skipped, its reason in error_message, and the task settles as for :meth:`complete_step`
        (``run_goes_on``: the pipeline run goes on to later stages). Returns the steps skipped."""
        now = utcnow()

        def run(conn: Connection) -> list[str]:
            steps = {s["step_name"]: s for s in self.tasks.steps(conn, task_id)}
            skipped = [
                name
                for name in STAGE_NAMES
                if name in reasons and steps[name]["status"] not in (StepStatus.COMPLETED, StepStatus.SKIPPED)
            ]
            for name in skipped:
                self._transition(
                    conn, task_id, name, StepStatus.SKIPPED, error_message=reasons[name], completed_at=now
                )
            if skipped:
                self._settle_task(conn, task_id, skipped[-1], run_goes_on=run_goes_on)
            return skipped

        return self.db.write(run)

    @staticmethod
    def _to_pending(
        conn: Connection, task_id: int, step_names: Collection[str], *, keep_running: bool
    ) -> None:
        # keep_running: a running step is another run's, still at work; it settles itself
        ended = [StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.FAILED]
        conn.execute(
            task_steps.update()
            .where(
                task_steps.c.task_id == task_id,
                task_steps.c.step_name.in_(step_names),
                *([task_steps.c.status.in_(ended)] if keep_running else []),
            )
            .values(status=StepStatus.PENDING, error_message=None, completed_at=None, started_at=None)
        )

    def _settle_task(self, conn: Connection, task_id: int, step_name: str, *, run_goes_on: bool) -> None:
        """The task's status, current_step and error after ``step_name`` stopped: the one rule,
        derived from the steps.

        A cancelled task stays cancelled. The step that just failed fails the task, its error
        naming the stage; else a running step (another run's) keeps it running, an earlier
        failed step keeps it failed, and all steps completed (or skipped) complete it.
        Otherwise the task is running while its pipeline run goes on to the next stage, and
        pending (current_step = its first unfinished stage) when nothing will: a stage re-run
        alone on a task with unfinished stages.
        """
        if self.tasks.row(conn, task_id).status == TaskStatus.CANCELLED:
            self.tasks.update(task_id, conn)
            return
        now = utcnow()
        steps = self.tasks.steps(conn, task_id)
        this = next(s for s in steps if s["step_name"] == step_name)
        running = [s for s in steps if s["status"] == StepStatus.RUNNING]
        failed = [s for s in steps if s["status"] == StepStatus.FAILED]
        done = {StepStatus.COMPLETED, StepStatus.SKIPPED}
        values: dict[str, Any] = {"completed_at": None, "error_message": None}
        if this["status"] == StepStatus.FAILED or (failed and not running):
            first = this if this["status"] == StepStatus.FAILED else failed[0]
            values = {
                "status": TaskStatus.FAILED,
                "current_step": STAGE_NAMES.index(first["step_name"]),
                "completed_at": now,
                "error_message": f"{first['step_name']} failed: {first['error_message']}",
            }
        elif running:
            values.update(status=TaskStatus.RUNNING, current_step=STAGE_NAMES.index(running[0]["step_name"]))
        elif all(s["status"] in done for s in steps):
            values.update(status=TaskStatus.COMPLETED, current_step=len(STAGE_NAMES) - 1, completed_at=now)
        elif run_goes_on:
            values.update(status=TaskStatus.RUNNING, current_step=stage(step_name).index)
        else:
            unfinished = next(s for s in steps if s["status"] not in done)
            values.update(status=TaskStatus.PENDING, current_step=STAGE_NAMES.index(unfinished["step_name"]))
        self.tasks.update(task_id, conn, **values)

    def reset_from_step(self, task_id: int, step_name: str | None = None) -> str:
        """Prepare a retry: the given step (default: the first not completed) and all later
        steps go back to pending; completed earlier steps stay. Returns the step resumed from."""

        def run(conn: Connection) -> str:
            task = self.tasks.row(conn, task_id)
            if task.status not in RETRYABLE_TASK_STATUSES:
                raise IllegalTransition(
                    f"task {task_id} is {task.status}; only failed, cancelled or rejected tasks can be retried"
                )
            steps = self.tasks.steps(conn, task_id)
            if step_name is None:
                first = next((s for s in steps if s["status"] != StepStatus.COMPLETED), steps[-1])
            else:
                first = steps[stage(step_name).index]
            start = STAGE_NAMES.index(first["step_name"])
            self._to_pending(conn, task_id, STAGE_NAMES[start:], keep_running=False)
            if task.status == TaskStatus.REJECTED:  # the person retrying wants it reviewed again
                conn.execute(quality_gates.delete().where(quality_gates.c.task_id == task_id))
            # the resumed step's user-level retry counts like an Airflow retry
            conn.execute(
                task_steps.update()
                .where(task_steps.c.task_id == task_id, task_steps.c.step_name == first["step_name"])
                .values(retry_count=task_steps.c.retry_count + 1)
            )
            self.tasks.update(
                task_id,
                conn,
                status=TaskStatus.PENDING,
                current_step=start,
                completed_at=None,
                error_message=None,
            )
            return first["step_name"]

        return self.db.write(run)

    def step_result(self, task_id: int, step_name: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            raw = conn.execute(
                sa.select(task_steps.c.result).where(
                    task_steps.c.task_id == task_id, task_steps.c.step_name == step_name
                )
            ).scalar()
        return json.loads(raw) if raw else None

    def step_results(
        self, task_ids: Collection[int], step_names: Collection[str]
    ) -> dict[int, dict[str, Any]]:
        """The recorded results of those steps of those tasks, in one read: task id → step → result."""
        found: dict[int, dict[str, Any]] = {}
        if not task_ids:
            return found
        query = sa.select(task_steps.c.task_id, task_steps.c.step_name, task_steps.c.result).where(
            task_steps.c.task_id.in_(list(task_ids)),
            task_steps.c.step_name.in_(list(step_names)),
            task_steps.c.result.is_not(None),
        )
        with self.db.read() as conn:
            for task_id, step_name, raw in conn.execute(query):
                found.setdefault(task_id, {})[step_name] = json.loads(raw)
        return found
