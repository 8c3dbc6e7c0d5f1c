"""The workflow store: the seed's documented schema plus additive tables/columns.

SQLAlchemy Core over one URL: SQLite by default (WAL, busy timeout, foreign keys on,
writers take the lock up front with BEGIN IMMEDIATE so concurrent processes queue instead
of failing with "database is locked") and PostgreSQL by URL.

Every state change is a named operation that checks the transition it makes; callers
never write rows directly. The store knows nothing of Airflow.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from fuxictr_workflow.stages import (
    FINAL_TASK_STATUSES,
    STAGE_NAMES,
    ChunkStatus,
    StepStatus,
    TaskStatus,
    stage,
)

T = TypeVar("T")

# Big files have offsets past 2**31: INTEGER in SQLite is 64-bit already, PostgreSQL needs BIGINT.
BigInt = sa.Integer().with_variant(sa.BigInteger(), "postgresql")

metadata = sa.MetaData()

# --- the seed's three tables, column for column; additive columns after the seed's ones ---

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True, nullable=True),  # as the seed DDL
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("experiment_id", sa.String(100), nullable=False),
    sa.Column("sample_sql", sa.Text, nullable=False),
    sa.Column("infer_sql", sa.Text, nullable=False),
    sa.Column("hdfs_path", sa.String(500)),
    sa.Column("hive_table", sa.String(255)),
    sa.Column("status", sa.String(50), server_default="pending"),
    sa.Column("current_step", sa.Integer, server_default=sa.text("0")),
    sa.Column("created_at", sa.TIMESTAMP, server_default=sa.func.current_timestamp()),
    sa.Column("updated_at", sa.TIMESTAMP, server_default=sa.func.current_timestamp()),
    sa.Column("completed_at", sa.TIMESTAMP),
    # additive
    sa.Column("server", sa.String(100)),
    sa.Column("dag_run_id", sa.String(250)),
    sa.Column("heartbeat_at", sa.TIMESTAMP),
    sa.Column("error_message", sa.Text),
    sqlite_autoincrement=True,
)

task_steps = sa.Table(
    "task_steps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True, nullable=True),  # as the seed DDL
    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("step_name", sa.String(50), nullable=False),
    sa.Column("status", sa.String(50), server_default="pending"),
    sa.Column("started_at", sa.TIMESTAMP),
    sa.Column("completed_at", sa.TIMESTAMP),
    sa.Column("error_message", sa.Text),
    sa.Column("retry_count", sa.Integer, server_default=sa.text("0")),
    # additive: JSON result of the step (metrics, bytes moved, row counts ...)
    sa.Column("result", sa.Text),
    sqlite_autoincrement=True,
)
sa.Index("ix_task_steps_task_step", task_steps.c.task_id, task_steps.c.step_name, unique=True)

transfer_chunks = sa.Table(
    "transfer_chunks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True, nullable=True),  # as the seed DDL
    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("step_name", sa.String(50), nullable=False),
    sa.Column("chunk_id", sa.String(100), nullable=False),
    sa.Column("file_path", sa.String(500)),
    sa.Column("offset", BigInt),
    sa.Column("size", BigInt),
    sa.Column("status", sa.String(50), server_default="pending"),
    sa.Column("retry_count", sa.Integer, server_default=sa.text("0")),
    # additive: chunk hash, identity of the source file the chunk was cut from
    # (size:mtime_ns), and how many times its bytes were sent (resume is checked with it).
    sa.Column("checksum", sa.String(128)),
    sa.Column("source_sig", sa.String(200)),
    sa.Column("send_count", sa.Integer, server_default=sa.text("0")),
    sa.Column("updated_at", sa.TIMESTAMP),
    sa.UniqueConstraint("task_id", "step_name", "chunk_id"),
    sqlite_autoincrement=True,
)

# --- additive tables ---

task_logs = sa.Table(
    "task_logs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True, nullable=True),  # as the seed DDL
    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("step", sa.String(50)),
    sa.Column("level", sa.String(20), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("timestamp", sa.TIMESTAMP, nullable=False),
    sqlite_autoincrement=True,
)
sa.Index("ix_task_logs_task_id_id", task_logs.c.task_id, task_logs.c.id)

schema_version = sa.Table(
    "workflow_schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("applied_at", sa.TIMESTAMP, nullable=False),
)


def _migrate_v1(conn: Connection) -> None:
    """Version 1: the seed's three tables plus task_logs."""
    metadata.create_all(conn, tables=[tasks, task_steps, transfer_chunks, task_logs])


# Append a function for each schema change; `init` applies the ones not yet applied, in order.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_migrate_v1,)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """A store operation was refused (unknown task, illegal transition)."""


class NotFound(StoreError):
    pass


class IllegalTransition(StoreError):
    pass


# step status -> statuses it may move to. Restarting a running step is how a worker that
# died mid-stage is recovered (Airflow retries it); resetting to pending is `retry`.
# Completing, failing or pausing needs a running step.
_STEP_TRANSITIONS: dict[str, frozenset[str]] = {
    StepStatus.PENDING: frozenset({StepStatus.RUNNING, StepStatus.SKIPPED}),
    # running -> pending: the first part of a two-part stage run alone (`pause_step`)
    StepStatus.RUNNING: frozenset(
        {StepStatus.RUNNING, StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.PENDING}
    ),
    StepStatus.FAILED: frozenset({StepStatus.RUNNING, StepStatus.PENDING}),
    # completed -> running: an explicit re-run of one stage (`airflow tasks test ... -t '{"task_id": N}'`)
    StepStatus.COMPLETED: frozenset({StepStatus.PENDING, StepStatus.RUNNING}),
    StepStatus.SKIPPED: frozenset({StepStatus.PENDING, StepStatus.RUNNING}),
}


def utcnow() -> datetime:
    """Naive UTC, second precision kept with microseconds (what both backends store)."""
    return datetime.now(UTC).replace(tzinfo=None)


def iso(ts: datetime | str | None) -> str | None:
    """UTC ISO-8601 for API/WebSocket output."""
    if ts is None:
        return None
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    return ts.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


@dataclass(frozen=True)
class ChunkSpec:
    chunk_id: str
    file_path: str
    offset: int
    size: int
    source_sig: str


class WorkflowStore:
    """All reads and writes of the workflow tables."""

    def __init__(self, url: str, *, create: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._engines: dict[int, tuple[Engine, Engine]] = {}
        self._lock = threading.Lock()
        if create:
            self.init()

    # -- engines (one pair per process: Airflow forks task processes) --

    def _make_engines(self) -> tuple[Engine, Engine]:
        if not self.is_sqlite:
            engine = sa.create_engine(self.url, pool_pre_ping=True, future=True)
            return engine, engine
        path = self.url.split("///", 1)[-1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

        def make(immediate: bool) -> Engine:
            engine = sa.create_engine(self.url, connect_args={"timeout": 60, "check_same_thread": False})

            @sa.event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=60000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

            @sa.event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

            return engine

        return make(True), make(False)

    def _engine_pair(self) -> tuple[Engine, Engine]:
        pid = os.getpid()
        pair = self._engines.get(pid)
        if pair is None:
            with self._lock:
                pair = self._engines.get(pid) or self._make_engines()
                self._engines = {pid: pair}
        return pair

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine_pair()[1].connect() as conn:
            yield conn

    def _write(self, fn: Callable[[Connection], T]) -> T:
        """Run fn in one write transaction; retry when another process holds the lock too long."""
        delay = 0.05
        for attempt in range(10):
            try:
                with self._engine_pair()[0].begin() as conn:
                    return fn(conn)
            except sa.exc.OperationalError as err:
                text = str(err.orig).lower()
                if attempt == 9 or not ("locked" in text or "busy" in text or "could not serialize" in text):
                    raise
                time.sleep(delay + random.random() * delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        for write, read in self._engines.values():
            write.dispose()
            read.dispose()
        self._engines = {}

    # -- schema --

    def init(self) -> int:
        """Create or migrate the schema (idempotent). Returns the schema version."""

        def run(conn: Connection) -> int:
            metadata.create_all(conn, tables=[schema_version])
            current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
            for version in range(current + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version - 1](conn)
                conn.execute(schema_version.insert().values(version=version, applied_at=utcnow()))
            return SCHEMA_VERSION

        return self._write(run)

    def schema_version(self) -> int:
        with self._read() as conn:
            if not sa.inspect(conn).has_table(schema_version.name):
                return 0
            return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0

    # -- tasks --

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
        )
        return self._write(lambda conn: self._insert_task(conn, fields))

    def task_for_run(self, dag_run_id: str, fields: dict[str, Any], server: str | None = None) -> int:
        """The task of a DAG run, created from the run's (unvalidated) params on first use.

        Values are stored as given (cut to the column sizes) so that a bad value is shown
        in the failed step's error_message instead of losing the run.
        """

        def run(conn: Connection) -> int:
            found = conn.execute(sa.select(tasks.c.id).where(tasks.c.dag_run_id == dag_run_id)).scalar()
            if found is not None:
                return int(found)
            values: dict[str, Any] = {"server": server, "dag_run_id": dag_run_id}
            for column in ("name", "experiment_id", "sample_sql", "infer_sql", "hdfs_path", "hive_table"):
                raw = fields.get(column)
                text = "" if raw is None else str(raw)
                length = getattr(tasks.c[column].type, "length", None)
                values[column] = text[:length] if length else text
            return self._insert_task(conn, values)

        return self._write(run)

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

    def find_task_by_run(self, dag_run_id: str) -> int | None:
        with self._read() as conn:
            found = conn.execute(sa.select(tasks.c.id).where(tasks.c.dag_run_id == dag_run_id)).scalar()
        return None if found is None else int(found)

    def set_dag_run(self, task_id: int, dag_run_id: str) -> None:
        self._update_task(task_id, dag_run_id=dag_run_id)

    def claim_task(self, task_id: int, dag_run_id: str, previous: str | None) -> bool:
        """Make ``dag_run_id`` the task's run if its run is still ``previous`` (compare and set:
        of two runs claiming one task at once, one wins). Returns whether this run now owns it."""

        def run(conn: Connection) -> bool:
            owner = self._task_row(conn, task_id).dag_run_id
            if owner == dag_run_id:
                return True
            if owner != previous:
                return False
            self._update_task(task_id, conn, dag_run_id=dag_run_id)
            return True

        return self._write(run)

    def _update_task(self, task_id: int, conn: Connection | None = None, **values: Any) -> None:
        values.setdefault("updated_at", utcnow())

        def run(c: Connection) -> None:
            if c.execute(tasks.update().where(tasks.c.id == task_id).values(**values)).rowcount == 0:
                raise NotFound(f"task {task_id} does not exist")

        if conn is not None:
            run(conn)
        else:
            self._write(run)

    def heartbeat(self, task_id: int) -> None:
        now = utcnow()
        self._update_task(task_id, updated_at=now, heartbeat_at=now)

    def fail_task(self, task_id: int, reason: str) -> None:
        """Mark a task failed outside any step (e.g. its DAG run could not be triggered)."""
        self._update_task(task_id, status=TaskStatus.FAILED, error_message=reason, completed_at=utcnow())

    def cancel_task(self, task_id: int, reason: str = "cancelled by user") -> None:
        """Cancel a pending/running task; its running step fails with the reason."""

        def run(conn: Connection) -> None:
            task = self._task_row(conn, task_id)
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
            self._update_task(
                task_id, conn, status=TaskStatus.CANCELLED, error_message=reason, completed_at=now
            )

        self._write(run)

    def reset_from_step(self, task_id: int, step_name: str | None = None) -> str:
        """Prepare a retry: the given step (default: the first not completed) and all later
        steps go back to pending; completed earlier steps stay. Returns the step resumed from."""

        def run(conn: Connection) -> str:
            task = self._task_row(conn, task_id)
            if task.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
                raise IllegalTransition(
                    f"task {task_id} is {task.status}; only failed or cancelled tasks can be retried"
                )
            steps = self._steps(conn, task_id)
            if step_name is None:
                first = next((s for s in steps if s["status"] != StepStatus.COMPLETED), steps[-1])
            else:
                first = steps[stage(step_name).index]
            start = STAGE_NAMES.index(first["step_name"])
            conn.execute(
                task_steps.update()
                .where(task_steps.c.task_id == task_id, task_steps.c.step_name.in_(STAGE_NAMES[start:]))
                .values(status=StepStatus.PENDING, error_message=None, completed_at=None, started_at=None)
            )
            # the resumed step's user-level retry counts like an Airflow retry
            conn.execute(
                task_steps.update()
                .where(task_steps.c.task_id == task_id, task_steps.c.step_name == first["step_name"])
                .values(retry_count=task_steps.c.retry_count + 1)
            )
            self._update_task(
                task_id,
                conn,
                status=TaskStatus.PENDING,
                current_step=start,
                completed_at=None,
                error_message=None,
            )
            return first["step_name"]

        return self._write(run)

    # -- steps --

    def _transition(
        self,
        conn: Connection,
        task_id: int,
        step_name: str,
        new: StepStatus,
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
        if new not in _STEP_TRANSITIONS[row["status"]]:
            raise IllegalTransition(
                f"task {task_id} step {step_name}: cannot go from {row['status']} to {new}"
            )
        conn.execute(task_steps.update().where(task_steps.c.id == row["id"]).values(status=new, **values))
        return dict(row)

    def start_step(self, task_id: int, step_name: str) -> int:
        """Mark a step running (a re-start after failure counts as a retry). Returns retry_count."""
        now = utcnow()

        def run(conn: Connection) -> int:
            task = self._task_row(conn, task_id)
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
            self._update_task(
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

        return self._write(run)

    def complete_step(
        self, task_id: int, step_name: str, result: dict[str, Any] | None = None, *, alone: bool = False
    ) -> None:
        """Mark a running step completed. In a pipeline run the task stays running until its last
        stage completes; a step run ``alone`` (one stage re-run by itself) leaves the task in the
        status its steps say (see :meth:`_settle_task`)."""
        now = utcnow()

        def run(conn: Connection) -> None:
            values: dict[str, Any] = {"completed_at": now}
            if result is not None:
                values["result"] = json.dumps(result, default=str)
            self._transition(conn, task_id, step_name, StepStatus.COMPLETED, **values)
            self._settle_task(
                conn, task_id, step_name, run_goes_on=not alone and step_name != STAGE_NAMES[-1]
            )

        self._write(run)

    def fail_step(self, task_id: int, step_name: str, error_message: str, *, final: bool = True) -> None:
        """Mark a running step failed. final=False (Airflow will retry) leaves the task running;
        a final failure fails the task, its error naming the stage."""
        now = utcnow()

        def run(conn: Connection) -> None:
            self._transition(
                conn, task_id, step_name, StepStatus.FAILED, error_message=error_message, completed_at=now
            )
            if final:
                self._settle_task(conn, task_id, step_name, run_goes_on=False)
            else:
                self._update_task(task_id, conn)

        self._write(run)

    def pause_step(self, task_id: int, step_name: str) -> None:
        """A running step goes back to pending with its work part-done: the first part of a
        two-part stage run alone, whose second part has yet to run. The task settles as for
        :meth:`complete_step` ``alone``."""

        def run(conn: Connection) -> None:
            self._transition(conn, task_id, step_name, StepStatus.PENDING, completed_at=None)
            self._settle_task(conn, task_id, step_name, run_goes_on=False)

        self._write(run)

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
        if self._task_row(conn, task_id).status == TaskStatus.CANCELLED:
            self._update_task(task_id, conn)
            return
        now = utcnow()
        steps = self._steps(conn, task_id)
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
        self._update_task(task_id, conn, **values)

    def skip_step(self, task_id: int, step_name: str, reason: str | None = None) -> None:
        def run(conn: Connection) -> None:
            self._transition(
                conn, task_id, step_name, StepStatus.SKIPPED, error_message=reason, completed_at=utcnow()
            )
            self._update_task(task_id, conn)

        self._write(run)

    def step_result(self, task_id: int, step_name: str) -> dict[str, Any] | None:
        with self._read() as conn:
            raw = conn.execute(
                sa.select(task_steps.c.result).where(
                    task_steps.c.task_id == task_id, task_steps.c.step_name == step_name
                )
            ).scalar()
        return json.loads(raw) if raw else None

    # -- reads --

    def _task_row(self, conn: Connection, task_id: int) -> sa.Row[Any]:
        row = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).first()
        if row is None:
            raise NotFound(f"task {task_id} does not exist")
        return row

    @staticmethod
    def _steps(conn: Connection, task_id: int) -> list[dict[str, Any]]:
        rows = conn.execute(sa.select(task_steps).where(task_steps.c.task_id == task_id)).mappings().all()
        by_name = {r["step_name"]: dict(r) for r in rows}
        return [by_name[s] for s in STAGE_NAMES if s in by_name]

    def get_task(self, task_id: int, *, with_steps: bool = True) -> dict[str, Any]:
        with self._read() as conn:
            task = dict(self._task_row(conn, task_id)._mapping)
            if with_steps:
                task["steps"] = self._steps(conn, task_id)
        return task

    def list_tasks(
        self,
        *,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        servers: Collection[str] | None = None,
        unassigned: bool = True,
    ) -> list[dict[str, Any]]:
        """Newest first; with `servers`, only tasks of those servers (and, if `unassigned`,
        tasks without one), filtered before limit/offset so pages stay full."""
        query = sa.select(tasks).order_by(tasks.c.id.desc()).limit(limit).offset(offset)
        if status is not None:
            query = query.where(tasks.c.status == status)
        if servers is not None:
            allowed = tasks.c.server.in_(list(servers))
            query = query.where(sa.or_(allowed, tasks.c.server.is_(None)) if unassigned else allowed)
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def task_servers(self) -> set[str]:
        """Every server name tasks were created for (configured or not any more)."""
        query = sa.select(tasks.c.server).distinct().where(tasks.c.server.is_not(None))
        with self._read() as conn:
            return {r[0] for r in conn.execute(query)}

    def count_tasks(self, *, status: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(tasks)
        if status is not None:
            query = query.where(tasks.c.status == status)
        with self._read() as conn:
            return int(conn.execute(query).scalar() or 0)

    # -- transfer chunks --

    def register_chunks(
        self, task_id: int, step_name: str, specs: Sequence[ChunkSpec]
    ) -> list[dict[str, Any]]:
        """Record a transfer's chunk plan; keep rows whose source is unchanged (resume) and
        reset rows whose source changed. Returns the current rows for these chunk ids."""
        stage(step_name)

        def run(conn: Connection) -> list[dict[str, Any]]:
            ids = [s.chunk_id for s in specs]
            existing = (
                {
                    r["chunk_id"]: r
                    for r in conn.execute(
                        sa.select(transfer_chunks).where(
                            transfer_chunks.c.task_id == task_id,
                            transfer_chunks.c.step_name == step_name,
                            transfer_chunks.c.chunk_id.in_(ids),
                        )
                    ).mappings()
                }
                if ids
                else {}
            )
            now = utcnow()
            for spec in specs:
                fresh = {
                    "file_path": spec.file_path,
                    "offset": spec.offset,
                    "size": spec.size,
                    "source_sig": spec.source_sig,
                    "status": ChunkStatus.PENDING,
                    "checksum": None,
                    "updated_at": now,
                }
                old = existing.get(spec.chunk_id)
                if old is None:
                    conn.execute(
                        transfer_chunks.insert().values(
                            task_id=task_id, step_name=step_name, chunk_id=spec.chunk_id, **fresh
                        )
                    )
                elif (old["source_sig"], old["offset"], old["size"]) != (
                    spec.source_sig,
                    spec.offset,
                    spec.size,
                ):
                    conn.execute(
                        transfer_chunks.update().where(transfer_chunks.c.id == old["id"]).values(**fresh)
                    )
            return (
                [
                    dict(r)
                    for r in conn.execute(
                        sa.select(transfer_chunks)
                        .where(
                            transfer_chunks.c.task_id == task_id,
                            transfer_chunks.c.step_name == step_name,
                            transfer_chunks.c.chunk_id.in_(ids),
                        )
                        .order_by(transfer_chunks.c.id)
                    ).mappings()
                ]
                if ids
                else []
            )

        return self._write(run)

    def mark_chunk(
        self,
        task_id: int,
        step_name: str,
        chunk_id: str,
        status: ChunkStatus,
        *,
        checksum: str | None = None,
        sent: bool = False,
        retried: bool = False,
    ) -> None:
        """Record a chunk's new status; sent=True counts one more transmission of its bytes."""
        values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
        if checksum is not None:
            values["checksum"] = checksum
        if sent:
            values["send_count"] = transfer_chunks.c.send_count + 1
        if retried:
            values["retry_count"] = transfer_chunks.c.retry_count + 1

        def run(conn: Connection) -> None:
            updated = conn.execute(
                transfer_chunks.update()
                .where(
                    transfer_chunks.c.task_id == task_id,
                    transfer_chunks.c.step_name == step_name,
                    transfer_chunks.c.chunk_id == chunk_id,
                )
                .values(**values)
            ).rowcount
            if updated == 0:
                raise NotFound(f"task {task_id} step {step_name} has no chunk {chunk_id!r}")

        self._write(run)

    def forget_chunks(self, task_id: int, step_name: str, keep_ids: Sequence[str]) -> int:
        """Delete a step's chunk rows not in `keep_ids` (no longer planned, e.g. a file that
        shrank or went away), so progress counts only the current plan. Returns rows deleted."""
        stage(step_name)
        keep = set(keep_ids)

        def run(conn: Connection) -> int:
            rows = conn.execute(
                sa.select(transfer_chunks.c.id, transfer_chunks.c.chunk_id).where(
                    transfer_chunks.c.task_id == task_id, transfer_chunks.c.step_name == step_name
                )
            ).all()
            stale = [r.id for r in rows if r.chunk_id not in keep]
            for start in range(0, len(stale), 500):  # stay under SQLite's bound-parameter limit
                batch = stale[start : start + 500]
                conn.execute(transfer_chunks.delete().where(transfer_chunks.c.id.in_(batch)))
            return len(stale)

        return self._write(run)

    def chunks(self, task_id: int, step_name: str | None = None) -> list[dict[str, Any]]:
        query = (
            sa.select(transfer_chunks)
            .where(transfer_chunks.c.task_id == task_id)
            .order_by(transfer_chunks.c.id)
        )
        if step_name is not None:
            query = query.where(transfer_chunks.c.step_name == step_name)
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def chunk_progress(self, task_id: int) -> dict[str, dict[str, int]]:
        """Per step: chunks and bytes in total and verified (for the API/UI)."""
        verified = sa.case((transfer_chunks.c.status == ChunkStatus.VERIFIED, 1), else_=0)
        query = (
            sa.select(
                transfer_chunks.c.step_name,
                sa.func.count().label("chunks_total"),
                sa.func.sum(verified).label("chunks_verified"),
                sa.func.coalesce(sa.func.sum(transfer_chunks.c.size), 0).label("bytes_total"),
                sa.func.coalesce(sa.func.sum(transfer_chunks.c.size * verified), 0).label("bytes_verified"),
            )
            .where(transfer_chunks.c.task_id == task_id)
            .group_by(transfer_chunks.c.step_name)
        )
        with self._read() as conn:
            return {
                r.step_name: {k: int(v or 0) for k, v in r._mapping.items() if k != "step_name"}
                for r in conn.execute(query)
            }

    # -- logs --

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

        return self._write(run)

    def logs_after(self, task_id: int, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        query = (
            sa.select(task_logs)
            .where(task_logs.c.task_id == task_id, task_logs.c.id > after_id)
            .order_by(task_logs.c.id)
            .limit(limit)
        )
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]


_stores: dict[str, WorkflowStore] = {}


def get_store(url: str | None = None) -> WorkflowStore:
    """The process-wide store for a URL (default: the configured one), schema ensured."""
    if url is None:
        from fuxictr_workflow.config import get_config

        url = get_config().store.url
    store = _stores.get(url)
    if store is None:
        store = _stores[url] = WorkflowStore(url, create=True)
    return store
