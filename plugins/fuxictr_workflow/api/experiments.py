"""The experiment routes: an experiment's history across its tasks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from fuxictr_workflow.api import history, security
from fuxictr_workflow.api.schemas import HistoryEntry, HistoryQuery
from fuxictr_workflow.domain import validation
from fuxictr_workflow.domain.task_fields import field_rule
from fuxictr_workflow.store import get_store

router = APIRouter(prefix="/experiments", tags=["Experiments"])

# the rule experiment_id is created with (validation.py): a 422 naming the path parameter
ExperimentId = Annotated[
    str,
    Path(description="the tasks' experiment_id"),
    field_rule(validation.validate_experiment_id),
]


@router.get(
    "/{experiment_id}/history",
    response_model=list[HistoryEntry],
    summary="An experiment's tasks with their final metrics, time, rows and model, newest first",
)
def experiment_history(
    experiment_id: ExperimentId, query: Annotated[HistoryQuery, Query()], user: security.CurrentUser
) -> list[dict[str, Any]]:
    """Only tasks of the DAGs the caller may read, as in the task list."""
    store = get_store()
    servers, unassigned = security.readable_task_servers(user, store.task_servers())
    return history.experiment_history(store, experiment_id, query, servers, unassigned)
