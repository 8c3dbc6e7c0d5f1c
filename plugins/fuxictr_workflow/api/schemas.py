"""Request/response models: the seed's TaskCreateRequest and Task, plus additive fields.

The task fields are task_fields.py's model, so the API (422 naming the field), the DAG's
trigger form and the stages agree; the path and table allowlists come from the API server's
config.yaml, the same file the stages read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fuxictr_workflow.domain.quality_gate import GateRecord
from fuxictr_workflow.domain.stages import TaskStatus
from fuxictr_workflow.domain.task_fields import TaskFields


class TaskCreateRequest(TaskFields):
    """The seed's six fields (task_fields.py); `server` is additive (default: config's
    default_server).

    Unknown fields are refused (422 naming them): a misspelt field must not be dropped silently."""

    model_config = ConfigDict(extra="forbid")

    server: str | None = None


class TaskCreated(BaseModel):
    task_id: int
    status: str


class Task(BaseModel):
    """The seed's Task, plus additive server, dag_run_id (with its DAG, dag_id), error_message
    and stale."""

    id: int
    name: str
    experiment_id: str
    sample_sql: str
    infer_sql: str
    hdfs_path: str | None
    hive_table: str | None
    status: str
    current_step: int
    created_at: str | None
    updated_at: str | None
    completed_at: str | None
    server: str | None = None
    dag_run_id: str | None = None
    dag_id: str | None = None
    error_message: str | None = None
    stale: bool = False


class Step(BaseModel):
    step_name: str
    status: str
    started_at: str | None
    completed_at: str | None
    error_message: str | None
    retry_count: int
    result: dict[str, Any] | None = None


class TransferProgress(BaseModel):
    chunks_total: int
    chunks_verified: int
    bytes_total: int
    bytes_verified: int


class Epoch(BaseModel):
    """One training epoch: validation AUC and logloss at its end, mean training loss over it."""

    epoch: int
    auc: float | None
    logloss: float | None
    train_loss: float | None


class GateAnswer(BaseModel):
    """Where the held decision is answered: POST /api/workflow/tasks/{id}/quality-gate, or
    Airflow's own HITL route directly,
    ``PATCH /api/v2/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/{map_index}/hitlDetails``
    with ``{"chosen_options": ["Approve"]}`` or ``["Reject"]`` (Airflow checks the caller's
    permission and writes its audit log)."""

    dag_id: str
    dag_run_id: str
    task_id: str
    map_index: int = -1


class GateDecisionRequest(BaseModel):
    """POST /tasks/{id}/quality-gate: the caller's decision on a held task."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]


class QualityGate(GateRecord):
    """The quality gate's review of the task's training against the experiment's last
    published model (validation AUC and logloss), and its decision."""

    updated_at: str | None
    answer: GateAnswer | None = None  # while the decision is waiting


class TaskDetail(Task):
    steps: list[Step]
    transfer: dict[str, TransferProgress] = Field(default_factory=dict)
    epochs: list[Epoch] = Field(default_factory=list)
    quality_gate: QualityGate | None = None  # null: the gate was off, or has not run yet


class HistoryQuery(BaseModel):
    """The query of GET /experiments/{experiment_id}/history: the task list's filter and paging.
    Unknown parameters are refused (422 naming them), as a misspelt filter must not be ignored."""

    model_config = ConfigDict(extra="forbid")

    status: TaskStatus | None = None
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0)


class HistoryEntry(BaseModel):
    """One task of an experiment: its outcome, time, data sizes and model."""

    task_id: int
    name: str
    status: str
    server: str | None
    created_at: str | None
    completed_at: str | None
    duration_s: float | None  # created_at to completed_at, for a completed task
    model: str | None  # the FuXiCTR model class train reported
    auc: float | None  # train's final validation metrics
    logloss: float | None
    sample_rows: int | None  # rows sample_sql exported (data_fetch)
    infer_rows: int | None  # rows infer scored
