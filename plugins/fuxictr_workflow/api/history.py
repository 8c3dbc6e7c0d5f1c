"""An experiment's history: its tasks with their outcome, time, data sizes and model.

What the history route answers, read from the store: the tasks come with the task list's
filter, paging and server scope; the rest is what their steps recorded (data_fetch's row
counts, train's final metrics and model, infer's scored rows), null where a step has not
recorded it.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from fuxictr_workflow.api.schemas import HistoryQuery
from fuxictr_workflow.domain.stages import Stage
from fuxictr_workflow.store import WorkflowStore, iso

RECORDING_STEPS = (Stage.DATA_FETCH, Stage.TRAIN, Stage.INFER)


def experiment_history(
    store: WorkflowStore,
    experiment_id: str,
    query: HistoryQuery,
    servers: Collection[str],
    unassigned: bool,
) -> list[dict[str, Any]]:
    """The experiment's tasks on `servers` (and without a server, if `unassigned`), newest first."""
    tasks = store.list_tasks(
        status=query.status,
        limit=query.limit,
        offset=query.offset,
        servers=servers,
        unassigned=unassigned,
        experiment_id=experiment_id,
    )
    results = store.step_results([t["id"] for t in tasks], RECORDING_STEPS)
    return [history_entry(t, results.get(t["id"], {})) for t in tasks]


def history_entry(task: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """One task as a HistoryEntry; `results` are its recorded step results by step name."""
    fetched, train, infer = (results.get(s) or {} for s in RECORDING_STEPS)
    return {
        "task_id": task["id"],
        "name": task["name"],
        "status": task["status"],
        "server": task["server"],
        "created_at": iso(task["created_at"]),
        "completed_at": iso(task["completed_at"]),
        "duration_s": _seconds_between(task["created_at"], task["completed_at"]),
        "model": train.get("model"),
        "auc": train.get("auc"),
        "logloss": train.get("logloss"),
        "sample_rows": fetched.get("sample_rows"),
        "infer_rows": infer.get("rows"),
    }


def _seconds_between(start: datetime | str | None, end: datetime | str | None) -> float | None:
    if start is None or end is None:
        return None
    begin, finish = (datetime.fromisoformat(t) if isinstance(t, str) else t for t in (start, end))
    return round((finish - begin).total_seconds(), 3)
