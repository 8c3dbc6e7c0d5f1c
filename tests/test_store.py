"""The workflow store's named operations, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuxictr_workflow.domain.stages import STAGE_NAMES
from fuxictr_workflow.store import ChunkSpec, EpochRecord, IllegalTransition, NotFound, WorkflowStore
from fuxictr_workflow.store.database import SCHEMA_VERSION
from fuxictr_workflow.store.errors import StaleAttempt
from tests.conftest import migrated_from, new_task
from tests.services.postgres import reset_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        pg = request.getfixturevalue("postgres_url")
        reset_database(pg)
        yield pg


@pytest.fixture
def db(url: str) -> Iterator[WorkflowStore]:
    store = WorkflowStore(url, create=True)
    yield store
    store.dispose()


def test_create_task_has_six_pending_steps(db: WorkflowStore) -> None:
    task_id = new_task(db, name="my_task")
    task = db.get_task(task_id)
    assert task["status"] == "pending" and task["current_step"] == 0
    assert task["created_at"] is not None and task["completed_at"] is None
    assert [s["step_name"] for s in task["steps"]] == list(STAGE_NAMES)
    assert {s["status"] for s in task["steps"]} == {"pending"}
    assert {s["retry_count"] for s in task["steps"]} == {0}


def test_full_lifecycle_completes_task(db: WorkflowStore) -> None:
    task_id = new_task(db)
    for index, step in enumerate(STAGE_NAMES):
        db.start_step(task_id, step)
        task = db.get_task(task_id, with_steps=False)
        assert (task["status"], task["current_step"]) == ("running", index)
        db.complete_step(task_id, step, {"index": index})
    task = db.get_task(task_id)
    assert task["status"] == "completed" and task["current_step"] == 5 and task["completed_at"] is not None
    assert all(s["status"] == "completed" and s["started_at"] and s["completed_at"] for s in task["steps"])
    assert db.step_result(task_id, "train") == {"index": 2}


def status(db: WorkflowStore, task_id: int) -> tuple[str, int, str | None]:
    task = db.get_task(task_id, with_steps=False)
    return task["status"], task["current_step"], task["error_message"]


def test_a_stage_alone_leaves_the_status_its_steps_say(db: WorkflowStore) -> None:
    """One stage of a task re-run by itself (`airflow tasks test`): the task ends completed,
    failed naming the stage, or pending, never running; no other step moves."""
    task_id = new_task(db)
    for step in STAGE_NAMES:
        db.start_step(task_id, step)
        db.complete_step(task_id, step)
    steps_before = db.get_task(task_id)["steps"]
    db.start_step(task_id, "train", alone=True)
    assert status(db, task_id) == ("running", 2, None)
    db.complete_step(task_id, "train", {"auc": 0.8}, alone=True)
    assert status(db, task_id) == ("completed", 5, None)
    assert db.get_task(task_id)["completed_at"] is not None
    db.start_step(task_id, "infer", alone=True)
    db.fail_step(task_id, "infer", "model file missing")
    assert status(db, task_id) == ("failed", 3, "infer failed: model file missing")
    db.start_step(task_id, "infer", alone=True)
    db.complete_step(task_id, "infer", alone=True)
    assert status(db, task_id) == ("completed", 5, None)
    # the first part of a two-part stage alone: the stage waits, pending, for its second part
    db.start_step(task_id, "data_fetch", alone=True)
    db.pause_step(task_id, "data_fetch")
    task = db.get_task(task_id)
    assert (task["status"], task["current_step"], task["completed_at"]) == ("pending", 0, None)
    assert task["steps"][0]["status"] == "pending" and task["steps"][0]["started_at"] is not None
    db.start_step(task_id, "data_fetch", alone=True)
    db.complete_step(task_id, "data_fetch", alone=True)
    assert status(db, task_id) == ("completed", 5, None)
    steps_after = db.get_task(task_id)["steps"]
    untouched = [b["step_name"] for b, a in zip(steps_before, steps_after, strict=True) if a == b]
    assert untouched == ["data_upload", "result_download", "hive_upload"]


def test_a_stage_alone_on_a_new_task(db: WorkflowStore) -> None:
    task_id = new_task(db)
    db.start_step(task_id, "train", alone=True)
    db.complete_step(task_id, "train", alone=True)
    assert status(db, task_id) == ("pending", 0, None)
    db.start_step(task_id, "infer", alone=True)
    db.fail_step(task_id, "infer", "no model")
    assert status(db, task_id) == ("failed", 3, "infer failed: no model")
    # a pipeline stage completing in between keeps the task running; the last one completes it
    other = new_task(db)
    db.start_step(other, "data_fetch")
    db.complete_step(other, "data_fetch")
    assert status(db, other) == ("running", 0, None)


def test_a_stage_started_in_a_pipeline_run_reopens_the_later_steps(db: WorkflowStore) -> None:
    """A user clears train with its downstream tasks in a finished run: the later steps go back
    to pending when train starts, so the task reads running, not completed (or failed, from an
    infer that failed before), until the last stage completes again."""
    task_id = new_task(db)
    for step in STAGE_NAMES:
        db.start_step(task_id, step)
        if step == "infer":
            db.fail_step(task_id, step, "out of memory", final=False)
            db.start_step(task_id, step)
        db.complete_step(task_id, step, {"step": step})
    db.start_step(task_id, "train")
    task = db.get_task(task_id)
    assert [s["status"] for s in task["steps"]] == ["completed"] * 2 + ["running"] + ["pending"] * 3
    assert all(s["started_at"] is None and s["completed_at"] is None for s in task["steps"][3:])
    assert [s["retry_count"] for s in task["steps"]] == [0, 0, 0, 1, 0, 0]
    db.complete_step(task_id, "train")
    assert status(db, task_id) == ("running", 2, None)
    db.start_step(task_id, "infer")
    db.fail_step(task_id, "infer", "no GPU")
    db.start_step(task_id, "train")  # cleared again: the failed infer is reopened as well
    db.complete_step(task_id, "train")
    assert status(db, task_id) == ("running", 2, None)
    for step in STAGE_NAMES[3:]:
        db.start_step(task_id, step)
        db.complete_step(task_id, step)
    assert status(db, task_id) == ("completed", 5, None)


def test_an_overtaken_attempt_leaves_the_step_to_the_later_one(db: WorkflowStore) -> None:
    """A try that reports after the next try started the step again (Airflow marked it
    failed and moved on; its process was still ending) changes nothing: the step is the
    later attempt's."""
    task_id = new_task(db)
    first = db.start_step(task_id, "train")
    second = db.start_step(task_id, "train")  # the next try, with the first one's still running
    assert second == first + 1
    with pytest.raises(StaleAttempt, match="attempt 0 was overtaken by attempt 1"):
        db.fail_step(task_id, "train", "runner killed by signal 15", final=False, attempt=first)
    with pytest.raises(StaleAttempt):
        db.complete_step(task_id, "train", {"auc": 0.5}, attempt=first)
    with pytest.raises(StaleAttempt):
        db.pause_step(task_id, "train", attempt=first)
    train = db.get_task(task_id)["steps"][STAGE_NAMES.index("train")]
    assert (train["status"], train["error_message"], train["result"]) == ("running", None, None)
    db.complete_step(task_id, "train", {"auc": 0.8}, attempt=second)
    assert db.step_result(task_id, "train") == {"auc": 0.8}


def test_claim_task_is_compare_and_set(db: WorkflowStore) -> None:
    task_id = new_task(db)
    assert db.claim_task(task_id, "dag_a", "run_a", previous=None)
    assert not db.claim_task(task_id, "dag_a", "run_b", previous=None)  # run_a claimed it first
    assert db.claim_task(task_id, "dag_a", "run_a", previous=None)  # already the owner
    # the same run id in another DAG is another run: not the owner
    assert not db.claim_task(task_id, "dag_b", "run_a", previous=None)
    assert db.claim_task(task_id, "dag_b", "run_b", previous="run_a")
    task = db.get_task(task_id, with_steps=False)
    assert (task["dag_id"], task["dag_run_id"]) == ("dag_b", "run_b")


def test_illegal_transitions_are_refused(db: WorkflowStore) -> None:
    task_id = new_task(db)
    with pytest.raises(IllegalTransition, match="pending to completed"):
        db.complete_step(task_id, "train")
    with pytest.raises(IllegalTransition):
        db.fail_step(task_id, "train", "x")
    db.start_step(task_id, "data_fetch")
    db.complete_step(task_id, "data_fetch")
    with pytest.raises(IllegalTransition, match="completed to completed"):
        db.complete_step(task_id, "data_fetch")
    with pytest.raises(ValueError, match="unknown step"):
        db.start_step(task_id, "bogus")
    with pytest.raises(NotFound):
        db.start_step(99999, "data_fetch")
    with pytest.raises(IllegalTransition, match="only failed, cancelled or rejected"):
        db.reset_from_step(task_id)


def test_failure_retry_and_reset(db: WorkflowStore) -> None:
    task_id = new_task(db)
    db.start_step(task_id, "data_fetch")
    db.complete_step(task_id, "data_fetch")
    db.start_step(task_id, "data_upload")
    db.fail_step(task_id, "data_upload", "connection reset", final=False)
    assert db.get_task(task_id, with_steps=False)["status"] == "running"  # Airflow will retry
    assert db.start_step(task_id, "data_upload") == 1
    db.fail_step(task_id, "data_upload", "connection reset again")
    task = db.get_task(task_id)
    assert task["status"] == "failed" and task["current_step"] == 1
    assert task["steps"][1]["error_message"] == "connection reset again"
    assert [s["status"] for s in task["steps"][2:]] == ["pending"] * 4

    assert db.reset_from_step(task_id) == "data_upload"
    task = db.get_task(task_id)
    assert task["status"] == "pending" and task["current_step"] == 1
    assert [s["status"] for s in task["steps"]] == ["completed"] + ["pending"] * 5
    assert task["steps"][1]["error_message"] is None and task["steps"][1]["retry_count"] == 2


def test_worker_died_restart_counts_retry(db: WorkflowStore) -> None:
    task_id = new_task(db)
    db.start_step(task_id, "train")
    assert db.start_step(task_id, "train") == 1


def test_cancel(db: WorkflowStore) -> None:
    task_id = new_task(db)
    db.start_step(task_id, "data_fetch")
    db.cancel_task(task_id)
    task = db.get_task(task_id)
    assert task["status"] == "cancelled"
    assert task["steps"][0]["status"] == "failed" and "cancelled" in task["steps"][0]["error_message"]
    with pytest.raises(IllegalTransition):
        db.start_step(task_id, "data_upload")
    with pytest.raises(IllegalTransition):
        db.cancel_task(task_id)


def test_list_newest_first_with_filters(db: WorkflowStore) -> None:
    ids = [new_task(db, name=f"t{i}") for i in range(5)]
    db.fail_task(ids[1], "trigger failed")
    assert [t["id"] for t in db.list_tasks()] == ids[::-1]
    assert [t["id"] for t in db.list_tasks(limit=2, offset=1)] == [ids[3], ids[2]]
    assert [t["id"] for t in db.list_tasks(status="failed")] == [ids[1]]
    assert len(db.list_tasks()) == 5 and len(db.list_tasks(status="pending")) == 4


def test_task_for_run_is_idempotent(db: WorkflowStore) -> None:
    fields = {"name": "ui", "experiment_id": "e", "sample_sql": "SELECT 1", "infer_sql": "SELECT 2"}
    first = db.task_for_run("dag_a", "manual__1", fields, server="a")
    assert db.task_for_run("dag_a", "manual__1", fields, server="a") == first
    assert db.task_for_run("dag_a", "manual__2", fields, server="a") != first
    task = db.get_task(first)
    assert (task["dag_id"], task["dag_run_id"], task["server"]) == ("dag_a", "manual__1", "a")


def test_a_run_is_found_by_dag_and_run_id(db: WorkflowStore) -> None:
    """Run ids are unique only within one DAG: the same id in another server's DAG is another
    run, which neither finds nor adopts this run's task."""
    fields = {"name": "ui", "experiment_id": "e", "sample_sql": "SELECT 1", "infer_sql": "SELECT 2"}
    a = db.task_for_run("dag_a", "same_id", fields, server="a")
    assert db.find_task_by_run("dag_a", "same_id", "a") == a
    assert db.find_task_by_run("dag_b", "same_id", "b") is None
    b = db.task_for_run("dag_b", "same_id", fields, server="b")
    assert b != a and db.get_task(b)["server"] == "b"
    assert [t["id"] for t in db.tasks_with_run_id("same_id")] == [a, b]
    api = new_task(db, server="a")
    db.set_dag_run(api, "dag_a", "workflow_task_x__1f")
    assert db.find_task_by_run("dag_a", "workflow_task_x__1f", "a") == api
    assert db.find_task_by_run("dag_b", "workflow_task_x__1f", "b") is None
    db.clear_dag_run(api)
    assert db.find_task_by_run("dag_a", "workflow_task_x__1f", "a") is None


def test_chunks_resume_and_source_change(db: WorkflowStore) -> None:
    task_id = new_task(db)
    specs = [ChunkSpec(f"f:{i}", "/data/f", i * 10, 10, "20:1") for i in range(2)]
    rows = db.register_chunks(task_id, "data_upload", specs)
    assert [r["status"] for r in rows] == ["pending", "pending"]
    db.mark_chunk(task_id, "data_upload", "f:0", "verified", checksum="aa", sent=True)
    db.mark_chunk(task_id, "data_upload", "f:1", "failed", sent=True, retried=True)
    rows = db.register_chunks(task_id, "data_upload", specs)  # a restart: verified chunk kept
    assert [(r["status"], r["send_count"]) for r in rows] == [("verified", 1), ("failed", 1)]
    assert rows[1]["retry_count"] == 1
    changed = [ChunkSpec(s.chunk_id, s.file_path, s.offset, s.size, "20:2") for s in specs]
    rows = db.register_chunks(task_id, "data_upload", changed)  # source changed: start over
    assert [r["status"] for r in rows] == ["pending", "pending"]
    assert db.chunk_progress(task_id)["data_upload"]["chunks_total"] == 2
    with pytest.raises(NotFound):
        db.mark_chunk(task_id, "data_upload", "nope", "verified")


def test_big_offsets(db: WorkflowStore) -> None:
    task_id = new_task(db)
    big = 5 * 2**30
    db.register_chunks(task_id, "data_upload", [ChunkSpec("big:512", "/data/big", big, 2**23, "x")])
    assert db.chunks(task_id)[0]["offset"] == big


def test_logs_in_order(db: WorkflowStore) -> None:
    task_id = new_task(db)
    ids = [db.append_log(task_id, "train", "INFO", f"line {i}") for i in range(5)]
    assert ids == sorted(ids)
    after = db.logs_after(task_id, ids[1])
    assert [e["message"] for e in after] == ["line 2", "line 3", "line 4"]


def test_init_is_idempotent_and_versioned(db: WorkflowStore) -> None:
    assert db.schema_version() == SCHEMA_VERSION == 6
    assert db.init() == SCHEMA_VERSION
    assert db.schema_version() == SCHEMA_VERSION


def test_migration_to_v2_fills_run_attempt_from_the_run_ids(db: WorkflowStore) -> None:
    """A version-1 store (tasks without run_attempt) gets the column, with each task's retry
    number taken from its run id, so its next new run does not reuse an existing run id."""
    retried = new_task(db, dag_run_id="workflow_task_7_retry_3")
    first = new_task(db, dag_run_id="workflow_task_8")
    other = new_task(db, dag_run_id="manual__x_retry_y")

    migrated_from(db, 1, "ALTER TABLE tasks DROP COLUMN dag_id", "ALTER TABLE tasks DROP COLUMN run_attempt")
    attempts = {t: db.get_task(t, with_steps=False)["run_attempt"] for t in (retried, first, other)}
    assert attempts == {retried: 3, first: 0, other: 0}
    db.set_dag_run(first, "fuxictr_workflow", "workflow_task_8_retry_1", 1)
    assert db.get_task(first, with_steps=False)["run_attempt"] == 1


def test_migration_to_v3_binds_old_runs_to_their_servers_dag(db: WorkflowStore) -> None:
    """A version-2 store (tasks without dag_id) gets the column, NULL; such a task is found by
    its run in its own server's DAG only, and claiming it records the DAG."""
    old = new_task(db, server="gpu2", dag_run_id="workflow_task_9")

    migrated_from(db, 2, "ALTER TABLE tasks DROP COLUMN dag_id")
    assert db.get_task(old, with_steps=False)["dag_id"] is None
    assert db.find_task_by_run("fuxictr_workflow__gpu2", "workflow_task_9", "gpu2") == old
    assert db.find_task_by_run("fuxictr_workflow", "workflow_task_9", "local") is None
    assert db.claim_task(old, "fuxictr_workflow__gpu2", "workflow_task_9", previous=None)
    assert db.get_task(old, with_steps=False)["dag_id"] == "fuxictr_workflow__gpu2"


def test_migration_to_v4_adds_the_steps_job_log_position(db: WorkflowStore) -> None:
    """A version-3 store (task_steps without job_key / job_log_offset) gets both, NULL: its
    steps have logged no job's lines yet."""
    task_id = new_task(db)

    migrated_from(
        db,
        3,
        "ALTER TABLE task_steps DROP COLUMN job_key",
        "ALTER TABLE task_steps DROP COLUMN job_log_offset",
    )
    assert db.job_log_position(task_id, "train") == (None, 0)
    assert db.append_job_lines(task_id, "train", "job-1", 0, 10, [("INFO", "a")]) is not None
    assert db.job_log_position(task_id, "train") == ("job-1", 10)


def test_a_jobs_lines_are_logged_once_per_offset(db: WorkflowStore) -> None:
    """append_job_lines moves the step's offset with the lines it logs: a second writer from the
    same offset (a follower that read the same bytes) logs nothing, a new job starts from 0,
    and each step keeps its own position."""
    task_id = new_task(db)
    assert db.append_job_lines(task_id, "train", "job-1", 0, 6, [("INFO", "one")]) is not None
    assert db.append_job_lines(task_id, "train", "job-1", 0, 6, [("INFO", "one")]) is None
    assert db.append_job_lines(task_id, "train", "job-1", 3, 9, [("INFO", "two")]) is None
    assert db.append_job_lines(task_id, "train", "job-1", 6, 12, [("INFO", "two")]) is not None
    assert db.append_job_lines(task_id, "train", "job-2", 6, 12, [("INFO", "x")]) is None
    assert db.append_job_lines(task_id, "train", "job-2", 0, 4, [("INFO", "new")]) is not None
    assert db.append_job_lines(task_id, "infer", "job-3", 0, 5, [("INFO", "scored")]) is not None
    assert db.job_log_position(task_id, "train") == ("job-2", 4)
    assert db.job_log_position(task_id, "infer") == ("job-3", 5)
    logged = [(e["step"], e["message"]) for e in db.logs_after(task_id)]
    assert logged == [("train", "one"), ("train", "two"), ("train", "new"), ("infer", "scored")]


def epoch(
    n: int, auc: float | None = 0.7, logloss: float | None = 0.5, loss: float | None = 0.6
) -> EpochRecord:
    return EpochRecord(n, auc, logloss, loss)


def test_a_jobs_epochs_are_stored_with_its_lines_exactly_once(db: WorkflowStore) -> None:
    """Epochs ride in the transaction that logs the job's lines: a second writer of the same
    bytes stores none, a new job of the step (read from offset 0) replaces the step's epochs,
    and each step keeps its own."""
    task_id = new_task(db)
    assert db.append_job_lines(task_id, "train", "job-1", 0, 6, [("INFO", "e1")], [epoch(1)]) is not None
    assert db.append_job_lines(task_id, "train", "job-1", 0, 6, [("INFO", "e1")], [epoch(1)]) is None
    assert (
        db.append_job_lines(task_id, "train", "job-1", 6, 9, [], [epoch(2, 0.75, 0.45, 0.5), epoch(3)])
        is not None
    )
    assert db.append_job_lines(task_id, "train", "job-1", 6, 9, [], [epoch(2), epoch(3)]) is None
    assert db.epochs(task_id, "train") == [epoch(1), epoch(2, 0.75, 0.45, 0.5), epoch(3)]
    assert db.append_job_lines(task_id, "infer", "job-9", 0, 5, [], [epoch(1, None, None, 0.2)]) is not None
    assert (
        db.append_job_lines(task_id, "train", "job-2", 0, 4, [("INFO", "again")], [epoch(1, 0.8)]) is not None
    )
    assert db.epochs(task_id, "train") == [epoch(1, 0.8)]
    assert db.epochs(task_id, "infer") == [epoch(1, None, None, 0.2)]
    assert db.epochs(new_task(db), "train") == []


def test_an_epoch_the_job_reports_again_replaces_the_earlier_report(db: WorkflowStore) -> None:
    """The same epoch twice in one poll, and again in a later one: the lines are all logged, the
    position moves on, and the epoch is stored once with what was reported last."""
    task_id = new_task(db)
    lines = [("INFO", "e1"), ("INFO", "e1 again")]
    assert (
        db.append_job_lines(task_id, "train", "job-1", 0, 8, lines, [epoch(1, 0.6), epoch(1, 0.7)])
        is not None
    )
    assert db.append_job_lines(
        task_id, "train", "job-1", 8, 12, [("INFO", "e1, third")], [epoch(1, 0.8), epoch(2)]
    )
    assert db.epochs(task_id, "train") == [epoch(1, 0.8), epoch(2)]
    assert db.job_log_position(task_id, "train") == ("job-1", 12)
    assert [e["message"] for e in db.logs_after(task_id)] == ["e1", "e1 again", "e1, third"]


def test_migration_to_v5_adds_the_epochs_table(db: WorkflowStore) -> None:
    """A version-4 store (no task_epochs, no experiment index) gets both; its tasks have no epochs."""
    task_id = new_task(db)

    migrated_from(db, 4, "DROP TABLE task_epochs", "DROP INDEX ix_tasks_experiment_id_id")
    assert db.epochs(task_id, "train") == []
    assert db.append_job_lines(task_id, "train", "job-1", 0, 10, [], [epoch(1)]) is not None
    assert db.epochs(task_id, "train") == [epoch(1)]


def test_an_experiments_tasks_and_their_step_results(db: WorkflowStore) -> None:
    ids = [
        new_task(db, experiment_id=e, server=s) for e, s in [("a", "x"), ("b", "x"), ("a", "y"), ("a", None)]
    ]
    assert [t["id"] for t in db.list_tasks(experiment_id="a")] == [ids[3], ids[2], ids[0]]
    assert [t["id"] for t in db.list_tasks(experiment_id="a", servers=["x"], unassigned=False)] == [ids[0]]
    assert [t["id"] for t in db.list_tasks(experiment_id="a", limit=1, offset=1)] == [ids[2]]
    db.start_step(ids[0], "data_fetch")
    db.complete_step(ids[0], "data_fetch", {"sample_rows": 10})
    db.start_step(ids[0], "train")
    db.complete_step(ids[0], "train", {"auc": 0.7, "model": "DeepFM"})
    db.start_step(ids[2], "train")
    assert db.step_results(ids, ["train", "data_fetch"]) == {
        ids[0]: {"data_fetch": {"sample_rows": 10}, "train": {"auc": 0.7, "model": "DeepFM"}}
    }
    assert db.step_results([], ["train"]) == {}


# -- concurrency: 8 processes x 200 mixed writes against one database --

WORKERS, ROUNDS = 8, 25  # 25 rounds x 8 operations = 200 writes per process


def _worker(url: str, worker: int) -> None:
    store = WorkflowStore(url)
    for r in range(ROUNDS):
        task_id = new_task(store, name=f"w{worker}-{r}")
        store.start_step(task_id, "data_fetch")
        store.append_log(task_id, "data_fetch", "INFO", f"w{worker} r{r} start")
        store.register_chunks(task_id, "data_upload", [ChunkSpec("c0", "/f", 0, 1, "1:1")])
        store.mark_chunk(task_id, "data_upload", "c0", "verified", checksum="x", sent=True)
        store.complete_step(task_id, "data_fetch")
        store.append_log(task_id, "data_fetch", "INFO", f"w{worker} r{r} done")
        store.heartbeat(task_id)
    store.dispose()


def test_concurrent_writers_lose_nothing(db: WorkflowStore, url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(url, w)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * WORKERS, "a writer failed (see its traceback above)"
    total = WORKERS * ROUNDS
    tasks = db.list_tasks(limit=10_000)
    assert len(tasks) == total
    assert len({t["name"] for t in tasks}) == total
    done = [db.get_task(t["id"])["steps"][0]["status"] for t in tasks]
    assert done == ["completed"] * total
    assert sum(len(db.logs_after(t["id"])) for t in tasks) == 2 * total
    assert sum(len(db.chunks(t["id"])) for t in tasks) == total
