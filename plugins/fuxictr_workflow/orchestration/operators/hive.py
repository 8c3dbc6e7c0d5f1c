"""Stages data_fetch and hive_upload: HiveOperator (beeline) for the HiveQL, fsspec for HDFS.

    data_fetch:   HiveExportOperator(task_id="hive_export") >> HdfsDownloadOperator(task_id="hdfs_download")
    hive_upload:  HdfsUploadOperator(task_id="hdfs_upload") >> HiveLoadOperator(task_id="hive_load")

The HiveQL comes from include/sql/*.hql, rendered with the workflow task's validated values
(API-created runs carry only the task id). beeline needs to be on PATH: the pyspark wheel's
bin/ for the embedded default (scripts/hive_server.py sets it), the cluster's otherwise.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import jinja2
import pyarrow as pa
from airflow.providers.apache.hive.operators.hive import HiveOperator
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from fuxictr_workflow.domain import paths
from fuxictr_workflow.domain.sql_query import session_settings
from fuxictr_workflow.domain.stages import Stage
from fuxictr_workflow.domain.validation import FieldError, render_select
from fuxictr_workflow.files import handoff, hdfs
from fuxictr_workflow.orchestration.operators.base import WorkflowStageMixin
from fuxictr_workflow.tracking import StageError, StageRun


def sql_dirs() -> tuple[Path, ...]:
    """include/sql in a checkout (editable install), then where a wheel's data_files put it."""
    return (
        Path(__file__).resolve().parents[4] / "include" / "sql",
        Path(sys.prefix) / "share" / "fuxictr-workflow" / "sql",
    )


log = logging.getLogger(__name__)

SQL_DIRS = sql_dirs()
PARTITION_COLUMN = "task_id"
# The table property that marks a predictions table as this package's: only such a table
# is ever loaded into; any other existing table of that name is left alone.
OWNER_PROPERTY = "fuxictr_workflow.created_by"
OWNER_VALUE = "fuxictr-workflow"
ARROW_TO_HIVE = {
    "int8": "TINYINT", "int16": "SMALLINT", "int32": "INT", "int64": "BIGINT",
    "float": "FLOAT", "double": "DOUBLE", "string": "STRING", "large_string": "STRING", "bool": "BOOLEAN",
}  # fmt: skip
# A column name of the predictions table. The score columns' names come from the file the
# training server wrote (score_<label>): they are checked before they reach the HiveQL, where
# a `;` or a line break inside the quoting would end the statement for beeline.
COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Errors a retry cannot fix: the query or the table is wrong.
USER_ERRORS = re.compile(
    r"PARSE_SYNTAX_ERROR|TABLE_OR_VIEW_NOT_FOUND|UNRESOLVED_|SCHEMA_NOT_FOUND|ParseException|AnalysisException"
)


def hive_string(value: object) -> str:
    """Body of a '...' HiveQL literal: values are validated first, this is the second guard."""
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def hive_ident(value: object) -> str:
    """A `...`-quoted identifier (backticks doubled), so a name can never end the quoting."""
    return "`" + str(value).replace("`", "``") + "`"


def render(template: str, **values: Any) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in SQL_DIRS]), undefined=jinja2.StrictUndefined
    )
    env.filters.update(hive_string=hive_string, ident=hive_ident)
    return env.get_template(template).render(**values)


def ensure_beeline() -> str:
    """HiveCliHook runs `beeline` from PATH; fall back to the pyspark wheel's (embedded default)."""
    found = shutil.which("beeline")
    if found:
        return found
    try:
        import pyspark
    except ImportError:
        pyspark = None  # type: ignore[assignment]
    if pyspark is not None:
        home = Path(pyspark.__file__).resolve().parent
        if (home / "bin" / "beeline").exists():
            os.environ.setdefault("SPARK_HOME", str(home))
            os.environ["PATH"] = f"{home / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
            return str(home / "bin" / "beeline")
    raise StageError("beeline is not on PATH: install the Hive client on this worker (docs/hive.md)")


def hive_error(output: str) -> StageError:
    """Hive's own message: the beeline `Error:` line, without the Java exception prefixes."""
    line = next((ln for ln in output.splitlines() if re.search(r"(^|> )\s*Error:", ln)), "")
    if not line:
        tail = [ln for ln in output.splitlines() if ln.strip()][-3:]
        return StageError("Hive failed: " + " | ".join(tail)[-1000:])
    message = re.sub(r"^.*?Error:\s*(org\.apache\.hive\.service\.cli\.HiveSQLException:\s*)?", "", line)
    message = message.replace("Error running query: ", "").replace(
        "org.apache.spark.sql.catalyst.parser.", ""
    )
    message = message.replace("org.apache.spark.sql.", "")
    return StageError(f"Hive: {message.strip()}"[:2000], retryable=not USER_ERRORS.search(line))


class _TrackedHiveOperator(WorkflowStageMixin, HiveOperator):
    """HiveOperator whose hql is rendered from the workflow task at run time."""

    template_fields = ()  # the hql is built from validated values, not from user templates

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(hql="-- rendered at run time", **kwargs)

    def hql_for(self, run: StageRun) -> str:
        raise NotImplementedError

    def execute_stage(self, context: Any, run: StageRun) -> Any:
        self.hql = self.hql_for(run)
        ensure_beeline()
        self.hive_cli_conn_id = self.workflow_config.hive.cli_conn_id
        # a run may have no logical_date (a REST trigger without one), which HiveOperator needs only to name the job
        self.mapred_job_name = f"fuxictr_workflow task_{self.workflow_task['id']} {self.task_id}"
        run.info(f"running HiveQL through beeline ({self.hive_cli_conn_id}):\n{self.hql.strip()}")
        try:
            HiveOperator.execute(self, context)
        except AirflowException as err:  # it carries beeline's output
            raise hive_error(str(err)) from None
        return run.result


class HiveExportOperator(_TrackedHiveOperator):
    """data_fetch, part 1: sample_sql and infer_sql → Parquet under <hdfs_path>/task_<id>/."""

    stage = Stage.DATA_FETCH
    closes_step = False

    def hql_for(self, run: StageRun) -> str:
        task, dialect = self.workflow_task, self.workflow_config.hive.sql_dialect
        try:
            datasets = [
                {
                    "directory": paths.hdfs_task_dir(task["hdfs_path"], task["id"], name),
                    "sql": render_select(f"{name}_sql", task[f"{name}_sql"], dialect),
                }
                for name in paths.DATASETS
            ]
        except FieldError as err:
            raise StageError(str(err), retryable=False) from None
        return render("export.hql", datasets=datasets, session_settings=session_settings(dialect))


class HdfsDownloadOperator(WorkflowStageMixin, BaseOperator):
    """data_fetch, part 2: checks the export and copies it to this worker's staging (a cache:
    data_upload copies from HDFS again if it runs on another worker)."""

    stage = Stage.DATA_FETCH
    opens_step = False

    def execute_stage(self, context: Any, run: StageRun) -> dict[str, Any]:
        run.result.update(handoff.stage_datasets(self.workflow_config, self.workflow_task, run.info))
        if run.result["sample_rows"] == 0:
            raise StageError("sample_sql returned no rows: nothing to train on", retryable=False)
        return run.result


class HdfsUploadOperator(WorkflowStageMixin, BaseOperator):
    """hive_upload, part 1: HDFS results/ (from result_download) → <hdfs_path>/task_<id>/predictions/.

    A copy, not a move: Hive's LOAD DATA moves the files it loads, and a re-run of hive_upload
    must find the results again."""

    stage = Stage.HIVE_UPLOAD
    closes_step = False

    def execute_stage(self, context: Any, run: StageRun) -> dict[str, Any]:
        cfg, task = self.workflow_config, self.workflow_task
        source = handoff.results_url(task)
        url = paths.hdfs_task_dir(task["hdfs_path"], task["id"], "predictions")
        try:
            copied = hdfs.copy_file(source, url, cfg.hdfs.storage_options)
        except FileNotFoundError:
            raise StageError(
                f"no predictions at {source} (did result_download run?)", retryable=False
            ) from None
        run.info(f"predictions: {copied.bytes:,} bytes, {copied.rows:,} rows from {source} to {url}")
        return {"rows": copied.rows, "bytes": copied.bytes}


class HiveLoadOperator(_TrackedHiveOperator):
    """hive_upload, part 2: create hive_table if needed, load this task's partition (OVERWRITE)."""

    stage = Stage.HIVE_UPLOAD
    opens_step = False

    def hql_for(self, run: StageRun) -> str:
        cfg, task = self.workflow_config, self.workflow_task
        source = handoff.results_url(task)
        try:
            schema, rows = hdfs.parquet_schema(source, cfg.hdfs.storage_options)
        except FileNotFoundError:
            raise StageError(
                f"no predictions at {source} (did result_download run?)", retryable=False
            ) from None
        columns = predictions_columns(schema, source, cfg.fuxictr.id_columns)
        database, table = task["hive_table"].split(".")
        ensure_ours(database, table, cfg.hive.hiveserver2_conn_id)
        run.result.update(
            {
                "rows": rows,
                "hive_table": task["hive_table"],
                "partition": task["id"],
            }
        )
        return render(
            "load_predictions.hql",
            database=database,
            table=table,
            columns=columns,
            partition_column=PARTITION_COLUMN,
            directory=paths.hdfs_task_dir(task["hdfs_path"], task["id"], "predictions"),
            task_id=int(task["id"]),
            owner_property=OWNER_PROPERTY,
            owner_value=OWNER_VALUE,
        )


def ensure_ours(database: str, table: str, conn_id: str) -> None:
    """Refuse to load into an existing table that this package did not create.

    The names are validated identifiers (letters, digits, _). SHOW ... LIKE answers on
    HiveServer2 and the Spark Thrift Server alike (their column layouts differ)."""
    from airflow.providers.apache.hive.hooks.hive import HiveServer2Hook

    try:
        hook = HiveServer2Hook(hiveserver2_conn_id=conn_id)
        if database not in {str(r[0]).lower() for r in hook.get_records(f"SHOW DATABASES LIKE '{database}'")}:
            return
        rows = hook.get_records(f"SHOW TABLES IN {hive_ident(database)} LIKE '{table}'")
        if table not in {str(r[1] if len(r) > 1 else r[0]).lower() for r in rows}:
            return
        properties = dict(hook.get_records(f"SHOW TBLPROPERTIES {hive_ident(database)}.{hive_ident(table)}"))
    except Exception as err:  # connection refused, server restarting: Airflow retries
        log.warning("Hive: checking %s.%s failed", database, table, exc_info=True)
        raise StageError(f"Hive: checking {database}.{table} failed: {err}"[:2000]) from None
    if properties.get(OWNER_PROPERTY) != OWNER_VALUE:
        raise StageError(
            f"hive_table: {database}.{table} exists and was not created by fuxictr-workflow; "
            "it is never overwritten: name a new table",
            retryable=False,
        )


def score_columns(names: list[str]) -> list[str]:
    """The runner's score columns: `score` (single task) or `score_<label>` per task."""
    return [n for n in names if n == "score" or n.startswith("score_")]


def predictions_columns(schema: pa.Schema, source: str, id_columns: list[str]) -> list[tuple[str, str]]:
    """The table schema: the configured id columns (types from the file) + the score column(s),
    `score DOUBLE` for a single-task model, `score_<label> DOUBLE` per task for a multi-task one.

    Checked against the file's schema first, so a mismatch is named here rather than as NULLs in Hive."""
    scores = [n for n in score_columns(schema.names) if n not in id_columns]
    wanted = [*id_columns, *(scores or ["score"])]
    unfit = [n for n in wanted if not COLUMN_NAME.fullmatch(n)]
    if unfit:
        raise StageError(
            f"predictions file {source} has column name(s) {', '.join(map(repr, unfit))} that cannot be "
            "Hive columns (letters, digits and '_', at most 128, not starting with a digit); "
            "check the training server's runner and fuxictr.id_columns",
            retryable=False,
        )
    missing = [c for c in wanted if c not in schema.names]
    if missing:
        raise StageError(
            f"predictions file {source} lacks column(s) {', '.join(missing)} "
            f"(fuxictr.id_columns is {id_columns}; the file has {schema.names})",
            retryable=False,
        )
    if PARTITION_COLUMN in wanted:
        raise StageError(
            f"fuxictr.id_columns must not use {PARTITION_COLUMN!r}: it is the partition column",
            retryable=False,
        )
    return [
        (name, "DOUBLE" if name in scores else ARROW_TO_HIVE.get(str(schema.field(name).type), "STRING"))
        for name in wanted
    ]
