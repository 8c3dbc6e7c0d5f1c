"""The DAG's Params: the six task fields as JSON schemas, so the trigger form validates them.

Built from validation.py's limits and patterns: the form checks the shape, the API and the
stages enforce the full rules (the parsed query, the config's path and database allowlists).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fuxictr_workflow import validation as v
from fuxictr_workflow.validation import TASK_FIELDS

DAG_ID = "fuxictr_workflow"
# The DAG's first task (not a stage): makes the run its workflow task's one active run.
CLAIM_TASK_ID = "claim_task"


def dag_id_for(server: str, default_server: str) -> str:
    """One DAG per training server (own pool); the default server's DAG is `fuxictr_workflow`."""
    return DAG_ID if server == default_server else f"{DAG_ID}__{server}"


def server_of_dag(dag_id: str, servers: Iterable[str], default_server: str) -> str | None:
    """The training server whose DAG `dag_id` is (None: no configured server's)."""
    return next((s for s in servers if dag_id_for(s, default_server) == dag_id), None)


def pool_for(server: str) -> str:
    """The Airflow pool that caps concurrent train/infer runs on one server."""
    return f"fuxictr_train_{server}"


def param_schemas(server: str) -> dict[str, dict[str, Any]]:
    """Param name -> keyword arguments for airflow.sdk.Param.

    The six fields default to null so that `airflow tasks test ... -t '{"task_id": N}'` (which
    validates every Param) can re-run one stage of an existing task; a run triggered without
    them fails its first stage with the missing field named. Given values must match the
    schema (length, pattern): the trigger form and Airflow's REST API (400 naming the param)
    refuse them at trigger time; the stages re-check what a schema cannot (one SQL statement).
    """
    sql = {
        "type": ["null", "string"],
        "minLength": 1,
        "maxLength": v.SQL_MAX,
        "pattern": v.NOT_BLANK_PATTERN,
        "format": "multiline",
    }
    schemas: dict[str, dict[str, Any]] = {
        "name": {
            "type": "string",
            "minLength": 1,
            "maxLength": v.NAME_MAX,
            "pattern": v.NAME_PATTERN,
            "title": "Task name",
            "description": "A name for this pipeline run.",
        },
        "experiment_id": {
            "type": "string",
            "minLength": 1,
            "maxLength": v.EXPERIMENT_ID_MAX,
            "pattern": v.EXPERIMENT_ID_PATTERN,
            "title": "Experiment id",
            "description": "FuXiCTR expid in the server's model_config.yaml (letters, digits, _ . -).",
        },
        "sample_sql": {
            **sql,
            "title": "Sample SQL",
            "description": "One SELECT (or WITH ... SELECT) query for the training data, with the label column.",
        },
        "infer_sql": {
            **sql,
            "title": "Inference SQL",
            "description": "One SELECT query for the rows to score (id column(s) + features).",
        },
        "hdfs_path": {
            "type": "string",
            "minLength": 1,
            "maxLength": v.HDFS_PATH_MAX,
            "pattern": v.HDFS_PATH_PATTERN,
            "title": "HDFS path",
            "description": "Absolute path (or a URL config.yaml's hdfs.allowed_urls lists) for this run's files.",
        },
        "hive_table": {
            "type": "string",
            "minLength": 3,
            "maxLength": v.HIVE_TABLE_MAX,
            "pattern": v.HIVE_TABLE_PATTERN,
            "title": "Hive table",
            "description": "database.table for the predictions, in one of hive.output_databases "
            "(created if missing; one partition per task).",
        },
        "server": {
            "type": "string",
            "enum": [server],
            "default": server,
            "title": "Training server",
            "description": "The configured training server this DAG runs on.",
        },
    }
    for field in TASK_FIELDS:
        schemas[field].update(type=["null", "string"], default=None)
    schemas["task_id"] = {
        "type": ["null", "integer"],
        "minimum": 1,
        "default": None,
        "title": "Workflow task id",
        "description": "Set by the API: a run works only for the task the API started it for. "
        "Leave empty when triggering by hand (a new task is created).",
    }
    return schemas
