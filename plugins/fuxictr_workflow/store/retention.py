"""Which tasks have outlived the retention period, and the removal of their log and chunk rows.

A task is expired when it is final (completed, failed or cancelled) and has not changed since
the cutoff. The check is made again at each removal, in the same statement that removes: a
task retried meanwhile (pending or running again, its updated_at new) keeps its rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fuxictr_workflow.domain.stages import FINAL_TASK_STATUSES
from fuxictr_workflow.store.database import Database, task_logs, tasks, transfer_chunks

# bound parameters per IN list: SQLite allows 32,766, but a host may hold thousands of task dirs
_IDS_PER_QUERY = 500


def _expired(cutoff: datetime) -> Any:
    return sa.and_(tasks.c.status.in_([str(s) for s in FINAL_TASK_STATUSES]), tasks.c.updated_at < cutoff)


class Retention:
    def __init__(self, db: Database) -> None:
        self.db = db

    def finished_before(self, cutoff: datetime) -> list[dict[str, Any]]:
        """Final tasks last changed before `cutoff` (naive UTC), oldest first."""
        query = (
            sa.select(tasks.c.id, tasks.c.status, tasks.c.server, tasks.c.hdfs_path, tasks.c.updated_at)
            .where(_expired(cutoff))
            .order_by(tasks.c.id)
        )
        with self.db.read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def expired_among(self, task_ids: Iterable[int], cutoff: datetime) -> set[int]:
        """Those of `task_ids` that are expired (a host asks about the task dirs it holds)."""
        ids, found = sorted(set(task_ids)), set()
        with self.db.read() as conn:
            for start in range(0, len(ids), _IDS_PER_QUERY):
                batch = ids[start : start + _IDS_PER_QUERY]
                query = sa.select(tasks.c.id).where(tasks.c.id.in_(batch), _expired(cutoff))
                found.update(int(i) for i in conn.execute(query).scalars())
        return found

    def still_expired(self, task_id: int, cutoff: datetime) -> bool:
        query = sa.select(tasks.c.id).where(tasks.c.id == task_id, _expired(cutoff))
        with self.db.read() as conn:
            return conn.execute(query).scalar() is not None

    def record_counts(self, task_id: int) -> dict[str, int]:
        """task_logs and transfer_chunks rows of a task."""
        with self.db.read() as conn:
            return {
                table.name: int(
                    conn.execute(
                        sa.select(sa.func.count()).select_from(table).where(table.c.task_id == task_id)
                    ).scalar()
                    or 0
                )
                for table in (task_logs, transfer_chunks)
            }

    def purge_records(self, task_id: int, cutoff: datetime) -> dict[str, int]:
        """Delete the task's task_logs and transfer_chunks rows if it is still expired; the
        rows deleted per table (none when the task came back to life)."""

        def run(conn: Connection) -> dict[str, int]:
            if (
                conn.execute(sa.select(tasks.c.id).where(tasks.c.id == task_id, _expired(cutoff))).scalar()
                is None
            ):
                return {}
            return {
                table.name: int(conn.execute(table.delete().where(table.c.task_id == task_id)).rowcount or 0)
                for table in (task_logs, transfer_chunks)
            }

        return self.db.write(run)
