"""A stage's lifecycle as track_stage records it, when two tries of one stage overlap."""

from __future__ import annotations

from fuxictr_workflow.domain.stages import STAGE_NAMES
from fuxictr_workflow.store import WorkflowStore
from fuxictr_workflow.tracking import StageError, track_stage
from fuxictr_workflow.workflow_log import WorkflowLogger
from tests.conftest import new_task


def test_a_try_ending_after_the_next_one_started_does_not_close_its_step(
    store: WorkflowStore, wlogger: WorkflowLogger
) -> None:
    """Train marked failed in Airflow while its try follows the job from a worker: the try's
    process can still be ending (its job stopped, a failure to report) when the user clears
    train and the next try has started. The late failure must not fail the new try's step:
    with the step failed, nothing would stop the new job if its run failed in turn."""
    task_id = new_task(store)
    first = track_stage(task_id, "train", logger=wlogger, heartbeat_interval=60, will_retry=True)
    first.__enter__()
    with track_stage(task_id, "train", logger=wlogger, heartbeat_interval=60):
        late = StageError("train runner killed by signal 15")
        assert first.__exit__(StageError, late, None) is False  # the failure goes on up, unrecorded
        train = store.get_task(task_id)["steps"][STAGE_NAMES.index("train")]
        assert (train["status"], train["retry_count"]) == ("running", 1)
    train = store.get_task(task_id)["steps"][STAGE_NAMES.index("train")]
    assert train["status"] == "completed"
    said = [e["message"] for e in store.logs_after(task_id, limit=100)]
    assert any(m.startswith("not recorded: ") and "overtaken by attempt 1" in m for m in said), said
