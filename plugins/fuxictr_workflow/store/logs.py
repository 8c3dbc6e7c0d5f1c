"""The workflow log: lines of a task's events, read back in order (what the WebSocket streams)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fuxictr_workflow.store.database import Database, task_logs, task_steps, utcnow
from fuxictr_workflow.store.epochs import EpochRecord, forget_epochs, insert_epochs


class TaskLogs:
    """The task_logs rows; ids grow with every line, so a reader resumes after the last id it saw."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def append_log(
        self, task_id: int, step: str | None, level: str, message: str, timestamp: datetime | None = None
    ) -> int:
        ts = timestamp or utcnow()

        def run(conn: Connection) -> int:
            return int(
                conn.execute(
                    task_logs.insert().values(_log_row(task_id, step, level, message, ts))
                ).inserted_primary_key[0]
            )

        return self.db.write(run)

    def job_log_position(self, task_id: int, step: str) -> tuple[str | None, int]:
        """Which job's log the step's lines were last taken from, and how far into it (None, 0
        when none was)."""
        query = sa.select(task_steps.c.job_key, task_steps.c.job_log_offset).where(
            task_steps.c.task_id == task_id, task_steps.c.step_name == step
        )
        with self.db.read() as conn:
            row = conn.execute(query).first()
        if row is None or row.job_key is None:
            return None, 0
        return str(row.job_key), int(row.job_log_offset or 0)

    def append_job_lines(
        self,
        task_id: int,
        step: str,
        job_key: str,
        start: int,
        end: int,
        lines: list[tuple[str, str]],
        epochs: Sequence[EpochRecord] = (),
    ) -> datetime | None:
        """Log the (level, message) lines read from bytes start..end of job `job_key`'s log, and
        store the epochs those bytes reported, in the transaction that moves the step's offset
        from start to end. Whoever follows the job next resumes at end, so each line and epoch
        is recorded exactly once, even with two followers at once or one killed mid-poll. A job
        read from its start replaces the step's epochs of an earlier job. Returns the lines'
        timestamp, or None (nothing recorded) when the step's offset is no longer at start:
        another follower recorded these bytes."""
        ts = utcnow()
        same_job = sa.and_(task_steps.c.job_key == job_key, task_steps.c.job_log_offset == start)
        # a compare-and-set on the row: two writers at once cannot both match it, on either backend
        moved = (
            task_steps.update()
            .where(
                task_steps.c.task_id == task_id,
                task_steps.c.step_name == step,
                sa.or_(same_job, sa.and_(sa.literal(start) == 0, _other_job(job_key))),
            )
            .values(job_key=job_key, job_log_offset=end)
        )

        def run(conn: Connection) -> datetime | None:
            if conn.execute(moved).rowcount != 1:
                return None
            if start == 0:
                forget_epochs(conn, task_id, step)
            insert_epochs(conn, task_id, step, epochs, ts)
            if lines:
                conn.execute(task_logs.insert(), [_log_row(task_id, step, *line, ts) for line in lines])
            return ts

        return self.db.write(run)

    def logs_after(self, task_id: int, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        query = (
            sa.select(task_logs)
            .where(task_logs.c.task_id == task_id, task_logs.c.id > after_id)
            .order_by(task_logs.c.id)
            .limit(limit)
        )
        with self.db.read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]


def _log_row(task_id: int, step: str | None, level: str, message: str, ts: datetime) -> dict[str, Any]:
    return {"task_id": task_id, "step": step, "level": level, "message": message, "timestamp": ts}


def _other_job(job_key: str) -> sa.ColumnElement[bool]:
    return sa.or_(task_steps.c.job_key.is_(None), task_steps.c.job_key != job_key)
