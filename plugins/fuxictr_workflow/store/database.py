"""The store's database: the tables, their migrations, and connections to one URL.

SQLAlchemy Core over SQLite by default and PostgreSQL by URL. SQLite runs in WAL mode with
a busy timeout and foreign keys on, and writers take the lock up front (BEGIN IMMEDIATE) so
that concurrent processes queue instead of failing with "database is locked".
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

T = TypeVar("T")

# Big files have offsets past 2**31: INTEGER in SQLite is 64-bit already, PostgreSQL needs BIGINT.
BigInt = sa.Integer().with_variant(sa.BigInteger(), "postgresql")

metadata = sa.MetaData()

# tasks, task_steps and transfer_chunks keep the contract's DDL (tests/fixtures/seed_schema.sql)
# column for column and in its order, so clients written against it keep working; the columns
# after those are additive, nullable or defaulted. The keys are nullable=True because the
# contract declares them `INTEGER PRIMARY KEY AUTOINCREMENT` without NOT NULL.

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True, nullable=True),
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
    # n of the task's current run `workflow_task_<id>_retry_<n>` (0: `workflow_task_<id>`), so a
    # retry that needs a new run knows its number whatever run (the UI's, `dags test`'s) owns it now
    sa.Column("run_attempt", sa.Integer, nullable=False, server_default=sa.text("0")),
    # the DAG of the task's current run: a run is bound to its task by (dag_id, dag_run_id), since
    # every training server has its own DAG and run ids are unique only within one DAG. NULL in
    # rows older than version 3: those are bound to their server's DAG (store/tasks.py)
    sa.Column("dag_id", sa.String(250)),
    sqlite_autoincrement=True,
)

task_steps = sa.Table(
    "task_steps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True, nullable=True),
    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("step_name", sa.String(50), nullable=False),
    sa.Column("status", sa.String(50), server_default="pending"),
    sa.Column("started_at", sa.TIMESTAMP),
    sa.Column("completed_at", sa.TIMESTAMP),
    sa.Column("error_message", sa.Text),
    sa.Column("retry_count", sa.Integer, server_default=sa.text("0")),
    # additive: JSON result of the step (metrics, bytes moved, row counts ...)
    sa.Column("result", sa.Text),
    # additive: how far into its train/infer job's log the workflow log has taken lines, and
    # which job that log belongs to (store/logs.py append_job_lines)
    sa.Column("job_key", sa.String(100)),
    sa.Column("job_log_offset", BigInt),
    sqlite_autoincrement=True,
)
sa.Index("ix_task_steps_task_step", task_steps.c.task_id, task_steps.c.step_name, unique=True)

transfer_chunks = sa.Table(
    "transfer_chunks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True, nullable=True),
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
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True, nullable=True),
    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("step", sa.String(50)),
    sa.Column("level", sa.String(20), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("timestamp", sa.TIMESTAMP, nullable=False),
    sqlite_autoincrement=True,
)
sa.Index("ix_task_logs_task_id_id", task_logs.c.task_id, task_logs.c.id)

# One row per epoch of a train/infer job: the validation metrics FuXiCTR computed at the
# epoch's end and the mean training loss of the epoch (store/epochs.py). Written in the
# transaction that logs the job's lines (store/logs.py append_job_lines), so exactly once.
task_epochs = sa.Table(
    "task_epochs",
    metadata,
    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), primary_key=True),
    sa.Column("step", sa.String(50), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("auc", sa.Float),
    sa.Column("logloss", sa.Float),
    sa.Column("train_loss", sa.Float),
    sa.Column("timestamp", sa.TIMESTAMP, nullable=False),
)

# The quality gate's judgement of a task's training before hive_upload (store/gates.py): the
# figures compared, the rule applied and the decision, with who made it.
quality_gates = sa.Table(
    "quality_gates",
    metadata,
    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), primary_key=True),
    sa.Column("decision", sa.String(20), nullable=False),
    sa.Column("auc", sa.Float),
    sa.Column("logloss", sa.Float),
    sa.Column("baseline_task_id", sa.Integer),
    sa.Column("baseline_auc", sa.Float),
    sa.Column("baseline_logloss", sa.Float),
    sa.Column("max_auc_drop", sa.Float),
    sa.Column("max_logloss_rise", sa.Float),
    sa.Column("reason", sa.Text),
    sa.Column("decided_by", sa.String(250)),
    sa.Column("updated_at", sa.TIMESTAMP, nullable=False),
)

# an experiment's history lists its tasks newest first (GET /experiments/{id}/history)
ix_tasks_experiment = sa.Index("ix_tasks_experiment_id_id", tasks.c.experiment_id, tasks.c.id)

schema_version = sa.Table(
    "workflow_schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("applied_at", sa.TIMESTAMP, nullable=False),
)


def _migrate_v1(conn: Connection) -> None:
    """Version 1: the contract's three tables plus task_logs (a new store: in their current form)."""
    metadata.create_all(conn, tables=[tasks, task_steps, transfer_chunks, task_logs])


def _add_columns(conn: Connection, *columns: sa.Column) -> bool:
    """ALTER TABLE ... ADD COLUMN for each column its table lacks; False when all were there (a
    store created at this version by _migrate_v1 has them already)."""
    added = False
    for column in columns:
        if column.name in {c["name"] for c in sa.inspect(conn).get_columns(column.table.name)}:
            continue
        ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {column.table.name} ADD COLUMN {ddl}")
        added = True
    return added


def _migrate_v2(conn: Connection) -> None:
    """Version 2: tasks.run_attempt, filled from the retry number of the tasks' current run ids."""
    if not _add_columns(conn, tasks.c.run_attempt):
        return
    retried = sa.select(tasks.c.id, tasks.c.dag_run_id).where(
        tasks.c.dag_run_id.contains("_retry_", autoescape=True)
    )
    for task_id, run_id in conn.execute(retried).all():
        number = run_id.rsplit("_retry_", 1)[1]
        if number.isdigit():
            conn.execute(tasks.update().where(tasks.c.id == task_id).values(run_attempt=int(number)))


def _migrate_v3(conn: Connection) -> None:
    """Version 3: tasks.dag_id (nullable, additive). Existing rows keep NULL: the store cannot
    know which server was the default one, so lookups bind them to their server's DAG instead."""
    _add_columns(conn, tasks.c.dag_id)


def _migrate_v4(conn: Connection) -> None:
    """Version 4: task_steps.job_key and job_log_offset (nullable, additive). A step whose job
    was followed before has none: its job's lines are taken from the start of its log again."""
    _add_columns(conn, task_steps.c.job_key, task_steps.c.job_log_offset)


def _migrate_v5(conn: Connection) -> None:
    """Version 5: the task_epochs table and the index of tasks by experiment_id (a store
    created at this version by _migrate_v1 has the index already)."""
    metadata.create_all(conn, tables=[task_epochs])
    ix_tasks_experiment.create(conn, checkfirst=True)


def _migrate_v6(conn: Connection) -> None:
    """Version 6: the quality_gates table."""
    metadata.create_all(conn, tables=[quality_gates])


# Append a function for each schema change; `init` applies the ones not yet applied, in order.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (
    _migrate_v1,
    _migrate_v2,
    _migrate_v3,
    _migrate_v4,
    _migrate_v5,
    _migrate_v6,
)
SCHEMA_VERSION = len(MIGRATIONS)


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


def _lock_contention(err: BaseException) -> bool:
    """Another writer holds the database (SQLite's lock, PostgreSQL's serialization failure)."""
    if not isinstance(err, sa.exc.OperationalError):
        return False
    text = str(err.orig).lower()
    return "locked" in text or "busy" in text or "could not serialize" in text


class Database:
    """Connections to the store's URL: reads, write transactions (retried while another
    process holds the lock), and the schema's creation and migration."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._engines: dict[int, tuple[Engine, Engine]] = {}
        self._lock = threading.Lock()

    # -- engines: one (write, read) pair per process, because Airflow forks task processes --

    def _make_engines(self) -> tuple[Engine, Engine]:
        if not self.is_sqlite:
            engine = sa.create_engine(self.url, pool_pre_ping=True, future=True)
            return engine, engine
        path = self.url.split("///", 1)[-1]
        if path and path != ":memory:":
            from fuxictr_workflow.files.private_files import make_private_dir, touch_private

            # SQLite creates the file (and its -wal/-shm, with the file's mode) under the umask
            make_private_dir(os.path.dirname(os.path.abspath(path)))
            touch_private(path)

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
    def read(self) -> Iterator[Connection]:
        with self._engine_pair()[1].connect() as conn:
            yield conn

    @retry(
        retry=retry_if_exception(_lock_contention),
        stop=stop_after_attempt(10),
        wait=wait_random_exponential(multiplier=0.1, max=4.0),
        reraise=True,
    )
    def write(self, fn: Callable[[Connection], T]) -> T:
        """Run fn in one write transaction; retried (with jitter, so the writers spread out)
        while another process holds the lock longer than the driver waits."""
        with self._engine_pair()[0].begin() as conn:
            return fn(conn)

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

        return self.write(run)

    def schema_version(self) -> int:
        with self.read() as conn:
            if not sa.inspect(conn).has_table(schema_version.name):
                return 0
            return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
