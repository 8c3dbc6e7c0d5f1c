"""Tasks: their creation, ownership by a DAG run, cancellation and reads."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fuxictr_workflow.domain.stages import FINAL_TASK_STATUSES, STAGE_NAMES, StepStatus, TaskStatus
from fuxictr_workflow.store.database import Database, task_steps, tasks, utcnow
from fuxictr_workflow.store.errors import IllegalTransition, NotFound


def of_run(dag_id: str, dag_run_id: str, server: str | None = None) -> sa.ColumnElement[bool]:
    """The task bound to the DAG run (dag_id, dag_run_id). Run ids are unique only within a DAG
    (each training server has its own), so the run id alone may name another server's task.
    A row from before tasks.dag_id (NULL) is bound to its server's DAG: `server`, the server
    whose DAG `dag_id` is, matches it."""
    bound = tasks.c.dag_id == dag_id
    if server is not None:
        bound = sa.or_(bound, sa.and_(tasks.c.dag_id.is_(None), tasks.c.server == server))
    return sa.and_(tasks.c.dag_run_id == dag_run_id, bound)


class Tasks:
    """The task rows. A task is created with its six steps; how the steps move, and the task
    with them, is :class:`~fuxictr_workflow.store.steps.Steps`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_task(
        self,
        *,
        name: str,
        experiment_id: str,
        sample_sql: str,
        infer_sql: str,
        hdfs_path: str | None,
        hive_table: str | None,
        server: str | None = None,
        dag_run_id: str | None = None,
        dag_id: str | None = None,
    ) -> int:
        """Insert a pending task with its six pending steps; returns the task id."""
        fields = dict(
            name=name,
            experiment_id=experiment_id,
            sample_sql=sample_sql,
            infer_sql=infer_sql,
            hdfs_path=hdfs_path,
            hive_table=hive_table,
            server=server,
            dag_run_id=dag_run_id,
            dag_id=dag_id,
        )
        return self.db.write(lambda conn: self._insert_task(conn, fields))

    def task_for_run(self, dag_id: str, dag_run_id: str, fields: dict[str, Any], server: str) -> int:
        """The task of the DAG run (dag_id, dag_run_id), created from the run's (unvalidated)
        params on first use; `server` is the training server whose DAG `dag_id` is.

        Values are stored as given (cut to the column sizes) so that a bad value is shown
        in the failed step's error_message instead of losing the run.
        """

        def run(conn: Connection) -> int:
            found = conn.execute(sa.select(tasks.c.id).where(of_run(dag_id, dag_run_id, server))).scalar()
            if found is not None:
                return int(found)
            values: dict[str, Any] = {"server": server, "dag_run_id": dag_run_id, "dag_id": dag_id}
            for column in ("name", "experiment_id", "sample_sql", "infer_sql", "hdfs_path", "hive_table"):
                raw = fields.get(column)
                text = "" if raw is None else str(raw)
                length = getattr(tasks.c[column].type, "length", None)
                values[column] = text[:length] if length else text
            return self._insert_task(conn, values)

        return self.db.write(run)

    @staticmethod
    def _insert_task(conn: Connection, values: dict[str, Any]) -> int:
        now = utcnow()
        task_id = conn.execute(
            tasks.insert().values(
                status=TaskStatus.PENDING, current_step=0, created_at=now, updated_at=now, **values
            )
        ).inserted_primary_key[0]
        conn.execute(
            task_steps.insert(),
            [{"task_id": task_id, "step_name": s, "status": StepStatus.PENDING} for s in STAGE_NAMES],
        )
        return int(task_id)

    def find_task_by_run(self, dag_id: str, dag_run_id: str, server: str | None = None) -> int | None:
        """The task bound to the DAG run (dag_id, dag_run_id), see :func:`of_run`."""
        with self.db.read() as conn:
            found = conn.execute(sa.select(tasks.c.id).where(of_run(dag_id, dag_run_id, server))).scalar()
        return None if found is None else int(found)

    def tasks_with_run_id(self, dag_run_id: str) -> list[dict[str, Any]]:
        """Every task whose current run has this id, in any DAG (the caller filters by DAG)."""
        query = sa.select(tasks).where(tasks.c.dag_run_id == dag_run_id).order_by(tasks.c.id)
        with self.db.read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def set_dag_run(self, task_id: int, dag_id: str, dag_run_id: str, run_attempt: int = 0) -> None:
        """Record the run the API starts for the task, before it triggers it (so the run finds
        itself bound to the task when it starts), and its attempt number (0: the first)."""
        self.update(task_id, dag_id=dag_id, dag_run_id=dag_run_id, run_attempt=run_attempt)

    def clear_dag_run(self, task_id: int) -> None:
        """Forget the task's run (the API recorded a run it then could not create)."""
        self.update(task_id, dag_id=None, dag_run_id=None)

    def claim_task(self, task_id: int, dag_id: str, dag_run_id: str, previous: str | None) -> bool:
        """Make (dag_id, dag_run_id) the task's run if its run is still ``previous`` (compare and
        set: of two runs claiming one task at once, one wins). Returns whether this run now owns it."""

        def run(conn: Connection) -> bool:
            row = self.row(conn, task_id)
            if row.dag_run_id == dag_run_id and row.dag_id in (dag_id, None):
                if row.dag_id is None:
                    self.update(task_id, conn, dag_id=dag_id)
                return True
            if row.dag_run_id != previous:
                return False
            self.update(task_id, conn, dag_id=dag_id, dag_run_id=dag_run_id)
            return True

        return self.db.write(run)

    def update(self, task_id: int, conn: Connection | None = None, **values: Any) -> None:
        """Set a task's columns (and updated_at), in `conn`'s transaction or a new one."""
        values.setdefault("updated_at", utcnow())

        def run(c: Connection) -> None:
            if c.execute(tasks.update().where(tasks.c.id == task_id).values(**values)).rowcount == 0:
                raise NotFound(f"task {task_id} does not exist")

        if conn is not None:
            run(conn)
        else:
            self.db.write(run)

    def heartbeat(self, task_id: int) -> None:
        now = utcnow()
        self.update(task_id, updated_at=now, heartbeat_at=now)

    def fail_task(self, task_id: int, reason: str) -> None:
        """Mark a task failed outside any step (e.g. its DAG run could not be triggered)."""
        self.update(task_id, status=TaskStatus.FAILED, error_message=reason, completed_at=utcnow())

    def cancel_task(self, task_id: int, reason: str = "cancelled by user") -> None:
        """Cancel a pending/running task; its running step fails with the reason."""

        def run(conn: Connection) -> None:
            task = self.row(conn, task_id)
            if task.status in FINAL_TASK_STATUSES:
                raise IllegalTransition(
                    f"task {task_id} is already {task.status}; only pending/running tasks can be cancelled"
                )
            now = utcnow()
            conn.execute(
                task_steps.update()
                .where(task_steps.c.task_id == task_id, task_steps.c.status == StepStatus.RUNNING)
                .values(status=StepStatus.FAILED, error_message=reason, completed_at=now)
            )
            self.update(task_id, conn, status=TaskStatus.CANCELLED, error_message=reason, completed_at=now)

        self.db.write(run)

    # -- reads --

    @staticmethod
    def row(conn: Connection, task_id: int) -> sa.Row[Any]:
        row = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).first()
        if row is None:
            raise NotFound(f"task {task_id} does not exist")
        return row

    @staticmethod
    def steps(conn: Connection, task_id: int) -> list[dict[str, Any]]:
        """The task's step rows in stage order."""
        rows = conn.execute(sa.select(task_steps).where(task_steps.c.task_id == task_id)).mappings().all()
        by_name = {r["step_name"]: dict(r) for r in rows}
        return [by_name[s] for s in STAGE_NAMES if s in by_name]

    def get_task(self, task_id: int, *, with_steps: bool = True) -> dict[str, Any]:
        with self.db.read() as conn:
            task = dict(self.row(conn, task_id)._mapping)
            if with_steps:
                task["steps"] = self.steps(conn, task_id)
        return task

    def list_tasks(
        self,
        *,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        servers: Collection[str] | None = None,
        unassigned: bool = True,
        experiment_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; with `servers`, only tasks of those servers (and, if `unassigned`,
        tasks without one), filtered before limit/offset so pages stay full."""
        query = sa.select(tasks).order_by(tasks.c.id.desc()).limit(limit).offset(offset)
        if status is not None:
            query = query.where(tasks.c.status == status)
        if experiment_id is not None:
            query = query.where(tasks.c.experiment_id == experiment_id)
        if servers is not None:
            allowed = tasks.c.server.in_(list(servers))
            query = query.where(sa.or_(allowed, tasks.c.server.is_(None)) if unassigned else allowed)
        with self.db.read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def task_servers(self) -> set[str]:
        """Every server name tasks were created for (configured or not any more)."""
        query = sa.select(tasks.c.server).distinct().where(tasks.c.server.is_not(None))
        with self.db.read() as conn:
            return {r[0] for r in conn.execute(query)}
