"""The quality gate's records: one row per task, and the task status each decision sets.

A hold puts the task in ``waiting`` (no stage runs, so no heartbeat: it must not read as a
stale running task); Approve puts it back to ``running`` for hive_upload; Reject ends it as
``rejected`` with hive_upload skipped. Each is one transaction with the gate's row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fuxictr_workflow.domain.quality_gate import Decision, GateRecord
from fuxictr_workflow.domain.stages import Stage, StepStatus, TaskStatus
from fuxictr_workflow.store.database import Database, quality_gates, task_steps, tasks, utcnow
from fuxictr_workflow.store.errors import IllegalTransition
from fuxictr_workflow.store.tasks import Tasks


class QualityGates:
    def __init__(self, db: Database, tasks: Tasks) -> None:
        self.db = db
        self.tasks = tasks

    def _write(self, conn: Connection, task_id: int, record: GateRecord) -> None:
        values = {**record.model_dump(), "decision": str(record.decision), "updated_at": utcnow()}
        conn.execute(quality_gates.delete().where(quality_gates.c.task_id == task_id))
        conn.execute(quality_gates.insert().values(task_id=task_id, **values))

    def _live(self, conn: Connection, task_id: int) -> None:
        status = self.tasks.row(conn, task_id).status
        if status not in (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.WAITING):
            raise IllegalTransition(f"task {task_id} is {status}; its quality gate cannot decide now")

    def _decide(
        self, task_id: int, record: GateRecord, then: Callable[[Connection], None] | None = None
    ) -> None:
        """The record written, and `then` done, in one transaction while the task is live."""

        def run(conn: Connection) -> None:
            self._live(conn, task_id)
            self._write(conn, task_id, record)
            if then is not None:
                then(conn)

        self.db.write(run)

    def pass_gate(self, task_id: int, record: GateRecord) -> None:
        """Recorded; the task goes on to hive_upload as it is."""
        self._decide(task_id, record)

    def hold(self, task_id: int, record: GateRecord) -> None:
        """The task waits for a person's decision."""
        self._decide(
            task_id,
            record,
            lambda conn: self.tasks.update(task_id, conn, status=TaskStatus.WAITING, error_message=None),
        )

    def approve(self, task_id: int, record: GateRecord) -> None:
        """Approved: the task runs on to hive_upload."""
        self._decide(
            task_id,
            record,
            lambda conn: self.tasks.update(task_id, conn, status=TaskStatus.RUNNING, heartbeat_at=utcnow()),
        )

    def reject(self, task_id: int, record: GateRecord, message: str) -> None:
        """Rejected: hive_upload is skipped and the task ends ``rejected`` with ``message``."""

        def skip_hive_upload(conn: Connection) -> None:
            now = utcnow()
            conn.execute(
                task_steps.update()
                .where(task_steps.c.task_id == task_id, task_steps.c.step_name == Stage.HIVE_UPLOAD.value)
                .values(status=StepStatus.SKIPPED, error_message=message, completed_at=now)
            )
            self.tasks.update(
                task_id,
                conn,
                status=TaskStatus.REJECTED,
                current_step=Stage.HIVE_UPLOAD.index,
                error_message=message,
                completed_at=now,
            )

        self._decide(task_id, record, skip_hive_upload)

    def record_answer(self, task_id: int, decision: Decision, decided_by: str | None) -> bool:
        """A person's answer, as Airflow accepted it, on a review that still waits; the task's
        status is the gate task's to set when it resumes (or, should Airflow lose the resume,
        when its retry finds the answer here). False when the review no longer waits."""

        def run(conn: Connection) -> bool:
            updated = conn.execute(
                quality_gates.update()
                .where(quality_gates.c.task_id == task_id, quality_gates.c.decision == Decision.WAITING)
                .values(decision=str(decision), decided_by=decided_by, updated_at=utcnow())
            )
            return bool(updated.rowcount)

        return self.db.write(run)

    def gate(self, task_id: int) -> dict[str, Any] | None:
        with self.db.read() as conn:
            row = conn.execute(sa.select(quality_gates).where(quality_gates.c.task_id == task_id)).first()
        return dict(row._mapping) if row is not None else None

    def last_published(self, experiment_id: str, other_than: int) -> int | None:
        """The experiment's task that most recently completed (its predictions are in Hive),
        other than ``other_than``."""
        query = (
            sa.select(tasks.c.id)
            .where(
                tasks.c.experiment_id == experiment_id,
                tasks.c.status == TaskStatus.COMPLETED,
                tasks.c.id != other_than,
            )
            .order_by(tasks.c.completed_at.desc(), tasks.c.id.desc())
            .limit(1)
        )
        with self.db.read() as conn:
            return conn.execute(query).scalar()
