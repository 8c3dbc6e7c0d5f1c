"""The DAG's Params: the six task fields as JSON schemas, so the trigger form validates them.

Built from task_fields.py's model: the form checks the shape, the API and the stages enforce
the full rules (the parsed query, the config's path and database allowlists).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fuxictr_workflow.domain.stages import Stage
from fuxictr_workflow.domain.task_fields import field_schemas

DAG_ID = "fuxictr_workflow"
# The DAG's first task (not a stage): makes the run its workflow task's one active run.
CLAIM_TASK_ID = "claim_task"
# hive_upload's first task: the quality gate (operators/gate.py)
GATE_TASK_ID = "quality_gate"
GATE_TASK = f"{Stage.HIVE_UPLOAD.value}.{GATE_TASK_ID}"


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

    The six fields are task_fields.py's JSON Schema, each also allowing null, the default, so
    that `airflow tasks test ... -t '{"task_id": N}'` (which validates every Param) can re-run
    one stage of an existing task; a run triggered without them fails its first stage with the
    missing field named. Given values must match the schema (length, pattern): the trigger form
    and Airflow's REST API (400 naming the param) refuse them at trigger time; the stages
    re-check what a schema cannot (one SQL statement, the config's allowlists).
    """
    schemas: dict[str, dict[str, Any]] = {
        name: {**schema, "type": ["null", schema["type"]], "default": None}
        for name, schema in field_schemas().items()
    }
    schemas["server"] = {
        "type": "string",
        "enum": [server],
        "default": server,
        "title": "Training server",
        "description": "The configured training server this DAG runs on.",
    }
    schemas["task_id"] = {
        "type": ["null", "integer"],
        "minimum": 1,
        "default": None,
        "title": "Workflow task id",
        "description": "Set by the API: a run works only for the task the API started it for. "
        "Leave empty when triggering by hand (a new task is created).",
    }
    return schemas
