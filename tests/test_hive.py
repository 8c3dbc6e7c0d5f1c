"""Stages data_fetch and hive_upload against the real Spark Thrift Server and real beeline."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fuxictr_workflow.domain import paths
from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.domain.stages import StepStatus
from fuxictr_workflow.orchestration.operators.hive import (
    HdfsDownloadOperator,
    HdfsUploadOperator,
    HiveExportOperator,
    HiveLoadOperator,
)
from fuxictr_workflow.store import WorkflowStore, get_store
from scripts.hive_server import HiveInfo, HiveServer, free_port
from tests.conftest import new_task
from tests.services.hive import hive_config, hive_query, submitted_queries
from tests.stage_runs import DAG_ID, bind_run

pytestmark = pytest.mark.timeout(600)


def context(task_id: int) -> dict[str, Any]:
    """A run the API started for the task (bound to it in the configured store)."""
    run_id = f"manual__{task_id}"
    bind_run(task_id, run_id)
    return {
        "dag_run": SimpleNamespace(conf={"task_id": task_id}, run_id=run_id, dag_id=DAG_ID),
        "params": {},
        "ti": SimpleNamespace(try_number=1),
    }


def step(store: WorkflowStore, task_id: int, name: str) -> dict[str, Any]:
    return next(s for s in store.get_task(task_id)["steps"] if s["step_name"] == name)


@pytest.fixture(scope="module")
def source_table(hive: HiveInfo) -> str:
    hive_query("CREATE DATABASE IF NOT EXISTS t_hive")
    hive_query("DROP TABLE IF EXISTS t_hive.src")
    hive_query("CREATE TABLE t_hive.src (id BIGINT, c1 STRING, n1 DOUBLE, label INT) USING parquet")
    values = ", ".join(f"({i}, 'c{i % 7}', {i / 10}, {i % 2})" for i in range(100))
    hive_query(f"INSERT INTO t_hive.src VALUES {values}")
    hive_query("CREATE TABLE IF NOT EXISTS t_hive.sentinel (x INT) USING parquet")
    return "t_hive.src"


@pytest.fixture
def cfg(make_config: Callable[..., WorkflowConfig], hive: HiveInfo) -> WorkflowConfig:
    return make_config(hive=hive_config(hive, "t_hive"))


def fetch_task(store: WorkflowStore, tmp_path: Path, **fields: Any) -> int:
    defaults = {
        "sample_sql": "SELECT * FROM t_hive.src WHERE id < 40",
        "infer_sql": "SELECT id, c1, n1 FROM t_hive.src WHERE id >= 90",
        "hdfs_path": str(tmp_path / "hdfs"),
        "hive_table": "t_hive.predictions",
    }
    return new_task(store, server="local", **{**defaults, **fields})


def results_file(tmp_path: Path, task_id: int) -> Path:
    """Where result_download leaves a task's predictions for hive_upload (fetch_task's hdfs_path)."""
    local = Path(paths.hdfs_results(str(tmp_path / "hdfs"), task_id))
    local.parent.mkdir(parents=True)
    return local


def test_fetch_exports_query_results_to_staging(
    cfg: WorkflowConfig, source_table: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a worker without beeline on PATH: the operator finds the pyspark wheel's
    without = [p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "beeline").exists()]
    monkeypatch.setenv("PATH", os.pathsep.join(without))
    monkeypatch.delenv("SPARK_HOME", raising=False)
    store = get_store(cfg.store.url)
    task_id = fetch_task(store, tmp_path)
    HiveExportOperator(task_id="hive_export").execute(context(task_id))
    assert step(store, task_id, "data_fetch")["status"] == StepStatus.RUNNING  # the stage has a second part
    result = HdfsDownloadOperator(task_id="hdfs_download").execute(context(task_id))
    assert step(store, task_id, "data_fetch")["status"] == StepStatus.COMPLETED
    sample = paths.staging_dataset_dir(cfg.storage.staging_dir, task_id, "sample")
    infer = paths.staging_dataset_dir(cfg.storage.staging_dir, task_id, "infer")
    assert pq.read_table(sample).num_rows == 40 == result["sample_rows"]
    assert pq.read_table(sample).column_names == ["id", "c1", "n1", "label"]
    assert pq.read_table(infer).column_names == ["id", "c1", "n1"] and result["infer_rows"] == 10
    assert not [p for p in sample.iterdir() if p.name.startswith("_")]
    messages = [e["message"] for e in store.logs_after(task_id)]
    assert any("sample:" in m and "40 rows" in m for m in messages)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT nope FROM t_hive.src", "UNRESOLVED_COLUMN"),
        ("SELECT * FROM t_hive.missing", "TABLE_OR_VIEW_NOT_FOUND"),
    ],
)
def test_hive_errors_fail_the_stage_with_hives_message(
    cfg: WorkflowConfig, source_table: str, tmp_path: Path, sql: str, expected: str
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    store = get_store(cfg.store.url)
    task_id = fetch_task(store, tmp_path, sample_sql=sql)
    with pytest.raises(AirflowFailException, match=expected):
        HiveExportOperator(task_id="hive_export").execute(context(task_id))
    failed = step(store, task_id, "data_fetch")
    assert failed["status"] == StepStatus.FAILED and failed["error_message"].startswith("Hive: ")
    assert expected in failed["error_message"] and "\tat " not in failed["error_message"]


@pytest.mark.parametrize(
    "fields",
    [
        {"hive_table": "x; DROP TABLE t_hive.sentinel"},
        {"hive_table": "`t_hive`.`sentinel`"},
        {"hive_table": "t_hive.sen tinel"},
        {"sample_sql": "SELECT 1; DROP TABLE t_hive.sentinel"},
        {"infer_sql": "DROP TABLE t_hive.sentinel"},
        {"sample_sql": "SELECT * FROM t_hive.src WHERE id <"},  # a syntax error stops before beeline too
    ],
)
def test_injection_is_refused_before_hive(
    cfg: WorkflowConfig,
    source_table: str,
    hive_server: HiveServer,
    tmp_path: Path,
    fields: dict[str, str],
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    store = get_store(cfg.store.url)
    task_id = fetch_task(store, tmp_path, **fields)
    with pytest.raises(AirflowFailException, match=next(iter(fields))):
        HiveExportOperator(task_id="hive_export").execute(context(task_id))
    failed = step(store, task_id, "data_fetch")
    assert failed["error_message"].startswith(next(iter(fields)))
    assert not any("running HiveQL" in e["message"] for e in store.logs_after(task_id)), "beeline was called"
    assert hive_query("SHOW TABLES IN t_hive LIKE 'sentinel'"), "the sentinel table is gone"
    reached = [q for q in submitted_queries(hive_server) if "sentinel" in q and "DROP" in q.upper()]
    assert not reached, f"the server received {reached}"


def test_load_is_idempotent(cfg: WorkflowConfig, hive: HiveInfo, tmp_path: Path) -> None:
    store = get_store(cfg.store.url)
    task_id = fetch_task(store, tmp_path, hive_table="t_hive.predictions")
    local = results_file(tmp_path, task_id)
    pq.write_table(
        pa.table({"id": pa.array(range(500), pa.int64()), "score": [i / 1000 for i in range(500)]}), local
    )
    for _ in range(2):  # re-running stage 5 leaves the count unchanged
        HdfsUploadOperator(task_id="hdfs_upload").execute(context(task_id))
        result = HiveLoadOperator(task_id="hive_load").execute(context(task_id))
        assert result["rows"] == 500
        rows = hive_query(f"SELECT count(*) FROM t_hive.predictions WHERE task_id = {task_id}")
        assert rows[0][0] == 500
        assert step(store, task_id, "hive_upload")["status"] == StepStatus.COMPLETED
    # the table is marked as ours, which is what lets the second load in
    assert ("fuxictr_workflow.created_by", "fuxictr-workflow") in hive_query(
        "SHOW TBLPROPERTIES t_hive.predictions"
    )


def test_load_multitask_scores(cfg: WorkflowConfig, hive: HiveInfo, tmp_path: Path) -> None:
    """A multi-task model's predictions (score_<label> per task) land as one DOUBLE column each."""
    store = get_store(cfg.store.url)
    task_id = fetch_task(store, tmp_path, hive_table="t_hive.mtl_predictions")
    local = results_file(tmp_path, task_id)
    table = {"id": pa.array(range(50), pa.int64()), "score_label": [i / 100 for i in range(50)]}
    pq.write_table(pa.table({**table, "score_conversion": [i / 200 for i in range(50)]}), local)
    HdfsUploadOperator(task_id="hdfs_upload").execute(context(task_id))
    assert HiveLoadOperator(task_id="hive_load").execute(context(task_id))["rows"] == 50
    rows = hive_query(
        f"SELECT id, score_label, score_conversion FROM t_hive.mtl_predictions WHERE task_id = {task_id} AND id = 10"
    )
    assert [tuple(r) for r in rows] == [(10, 0.1, 0.05)]


def test_unreachable_hive_is_a_retryable_failure(
    cfg: WorkflowConfig, hive: HiveInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connection refused may pass (server restarting): Airflow retries instead of failing the task."""
    from fuxictr_workflow.tracking import StageError

    closed = free_port()
    monkeypatch.setenv(
        "AIRFLOW_CONN_HIVE_CLI_DEFAULT", f"hive-cli://hive@127.0.0.1:{closed}/default?use_beeline=true"
    )
    store = get_store(cfg.store.url)
    task_id = fetch_task(store, tmp_path)
    with pytest.raises(StageError, match="Connection refused") as err:
        HiveExportOperator(task_id="hive_export").execute(context(task_id))
    assert err.value.retryable
    assert "Connection refused" in step(store, task_id, "data_fetch")["error_message"]


def test_load_names_missing_prediction_columns(cfg: WorkflowConfig, hive: HiveInfo, tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    store = get_store(cfg.store.url)
    task_id = fetch_task(store, tmp_path)
    local = results_file(tmp_path, task_id)
    pq.write_table(pa.table({"row": [1, 2], "score": [0.1, 0.2]}), local)
    HdfsUploadOperator(task_id="hdfs_upload").execute(context(task_id))
    with pytest.raises(AirflowFailException, match="lacks column"):
        HiveLoadOperator(task_id="hive_load").execute(context(task_id))
    assert "id_columns" in step(store, task_id, "hive_upload")["error_message"]


def test_hive_upload_without_results_names_where_it_looked(cfg: WorkflowConfig, tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    store = get_store(cfg.store.url)
    task_id = fetch_task(store, tmp_path)
    with pytest.raises(AirflowFailException, match="did result_download run"):
        HdfsUploadOperator(task_id="hdfs_upload").execute(context(task_id))
    failed = step(store, task_id, "hive_upload")
    assert paths.hdfs_results(str(tmp_path / "hdfs"), task_id) in failed["error_message"]
