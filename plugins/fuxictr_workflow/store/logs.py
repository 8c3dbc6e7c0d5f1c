"""The workflow log: lines of a task's events, read back in order (what the WebSocket streams)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fuxictr_workflow.store.database import Database, task_logs, utcnow


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
                    task_logs.insert().values(
                        task_id=task_id, step=step, level=level, message=message, timestamp=ts
                    )
                ).inserted_primary_key[0]
            )

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
