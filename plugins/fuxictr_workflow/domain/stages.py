"""The six pipeline stages: the one source of truth for their names and order.

``current_step`` in the store, the DAG's task ids, the API and the UI all index into
:data:`STAGES`.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    DATA_FETCH = "data_fetch"
    DATA_UPLOAD = "data_upload"
    TRAIN = "train"
    INFER = "infer"
    RESULT_DOWNLOAD = "result_download"
    HIVE_UPLOAD = "hive_upload"

    @property
    def index(self) -> int:
        return STAGES.index(self)


STAGES: tuple[Stage, ...] = tuple(Stage)
STAGE_NAMES: tuple[str, ...] = tuple(s.value for s in STAGES)
# the stages that run a detached job on the training server
JOB_STAGES = (Stage.TRAIN, Stage.INFER)
JOB_STEPS = frozenset(stage.value for stage in JOB_STAGES)


def stage(name_or_index: str | int) -> Stage:
    """Look a stage up by name or 0-based index, with an error listing the valid ones."""
    if isinstance(name_or_index, int):
        if 0 <= name_or_index < len(STAGES):
            return STAGES[name_or_index]
        raise ValueError(f"step index must be 0..{len(STAGES) - 1}, got {name_or_index}")
    try:
        return Stage(name_or_index)
    except ValueError:
        raise ValueError(
            f"unknown step {name_or_index!r}; expected one of {', '.join(STAGE_NAMES)}"
        ) from None


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    # held by the quality gate before hive_upload, for a person's Approve / Reject
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # the gate's decision was Reject: nothing was published
    REJECTED = "rejected"


FINAL_TASK_STATUSES = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.REJECTED}
)
# a task in one of these may be retried (from its first unfinished stage)
RETRYABLE_TASK_STATUSES = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.REJECTED})


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


class ChunkStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    VERIFIED = "verified"
    FAILED = "failed"
