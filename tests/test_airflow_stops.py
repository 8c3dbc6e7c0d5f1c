"""What the workflow store says when Airflow ends a stage the stage's own code never saw end:
a task instance marked in Airflow, a DAG run failed with a step still running. The jobs are
stopped over the real sshd; the e2e module marks a task instance failed on the real stack."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.domain.stages import STAGE_NAMES
from fuxictr_workflow.orchestration import airflow_stops
from fuxictr_workflow.store import IllegalTransition, WorkflowStore
from fuxictr_workflow.workflow_log import WorkflowLogger
from tests.conftest import SshdInfo, new_task

DAG = "fuxictr_workflow"  # the DAG of server "local", make_config's only (default) server


def running_train(store: WorkflowStore, run_id: str = "run_1") -> int:
    task_id = new_task(store, server="local", dag_id=DAG, dag_run_id=run_id)
    for step in ("data_fetch", "data_upload"):
        store.start_step(task_id, step)
        store.complete_step(task_id, step, {})
    store.start_step(task_id, "train")
    return task_id


def step(store: WorkflowStore, task_id: int, name: str) -> dict:
    return next(s for s in store.get_task(task_id)["steps"] if s["step_name"] == name)


@pytest.mark.parametrize("stopped", [True, False])
def test_marked_failed_fails_the_step_as_cancelled(
    store: WorkflowStore, wlogger: WorkflowLogger, stopped: bool
) -> None:
    task_id = running_train(store)
    airflow_stops.record_mark(wlogger, task_id, "train", "failed", stopped)
    train = step(store, task_id, "train")
    assert train["status"] == "failed"
    assert train["error_message"].startswith("cancelled: train was marked failed in Airflow; its job")
    assert ("was stopped" in train["error_message"]) is stopped
    task = store.get_task(task_id, with_steps=False)
    assert task["status"] == "failed" and task["error_message"].startswith("train failed: cancelled:")


def test_a_stop_is_announced_before_it_is_made_unless_cancelled(
    store: WorkflowStore, wlogger: WorkflowLogger
) -> None:
    task_id = running_train(store)
    airflow_stops.announce_stop(wlogger, task_id, "train", "failed")
    airflow_stops.announce_stop(wlogger, task_id, "train", airflow_stops.CANCELLED)
    assert [e["message"] for e in store.logs_after(task_id)] == [
        "train was marked failed in Airflow; stopping its job on the training server"
    ]
    assert step(store, task_id, "train")["status"] == "running"  # closing it comes after the stop


def test_a_success_mark_skips_the_step_and_the_task_completes_with_its_last_stage(
    store: WorkflowStore, wlogger: WorkflowLogger
) -> None:
    """Airflow counts a stage marked success (or skipped) done and runs the next: its step is
    skipped with the mark as its reason, the task runs on and completes with its last stage (a
    step left running would keep it running after that)."""
    task_id = running_train(store)
    airflow_stops.record_mark(wlogger, task_id, "train", "success", True)
    train = step(store, task_id, "train")
    assert train["status"] == "skipped" and train["completed_at"] is not None
    assert train["error_message"] == (
        "train was marked success in Airflow before it finished; its job on the training server was stopped"
    )
    assert store.get_task(task_id, with_steps=False)["status"] == "running"
    airflow_stops.record_mark(wlogger, task_id, "infer", "skipped", None)  # before it ran
    assert (
        step(store, task_id, "infer")["error_message"] == "infer was marked skipped in Airflow before it ran"
    )
    for name in ("result_download", "hive_upload"):
        store.start_step(task_id, name)
        store.complete_step(task_id, name, {})
    task = store.get_task(task_id)
    assert task["status"] == "completed", task
    assert [s["status"] for s in task["steps"]] == ["completed"] * 2 + ["skipped"] * 2 + ["completed"] * 2
    # a mark of a step that completed, or was skipped already, changes nothing and says nothing
    said = len(store.logs_after(task_id))
    airflow_stops.record_mark(wlogger, task_id, "train", "success", True)
    airflow_stops.record_mark(wlogger, task_id, "hive_upload", "skipped", None)
    airflow_stops.record_mark(wlogger, task_id, "hive_upload", "failed", None)
    assert store.get_task(task_id)["steps"] == task["steps"]
    assert len(store.logs_after(task_id)) == said


def test_a_stage_that_failed_then_marked_success_lets_the_task_run_on(
    store: WorkflowStore, wlogger: WorkflowLogger
) -> None:
    task_id = running_train(store)
    store.fail_step(task_id, "train", "the stage's own error")
    assert store.get_task(task_id, with_steps=False)["status"] == "failed"
    airflow_stops.record_mark(wlogger, task_id, "train", "success", None)
    assert (
        step(store, task_id, "train")["error_message"]
        == "train was marked success in Airflow after it failed"
    )
    task = store.get_task(task_id, with_steps=False)
    assert (task["status"], task["error_message"]) == ("running", None)
    # the stage's own try, ending after the mark, cannot undo it
    with pytest.raises(IllegalTransition):
        store.fail_step(task_id, "train", "killed by signal 15")
    assert step(store, task_id, "train")["status"] == "skipped"


def test_a_failed_mark_fails_only_a_running_step(store: WorkflowStore, wlogger: WorkflowLogger) -> None:
    task_id = running_train(store)
    store.fail_step(task_id, "train", "the stage's own error")
    airflow_stops.record_mark(wlogger, task_id, "train", "failed", True)
    assert step(store, task_id, "train")["error_message"] == "the stage's own error"
    airflow_stops.record_mark(wlogger, task_id, "train", airflow_stops.CANCELLED, True)
    assert step(store, task_id, "train")["error_message"] == "the stage's own error"
    assert store.logs_after(task_id) == []


def test_failed_run_closes_its_running_step_and_stops_its_jobs(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo, store: WorkflowStore, wlogger: WorkflowLogger
) -> None:
    cfg = make_config(sshd)
    task_id = running_train(store, "run_1")
    other = running_train(store, "run_2")
    airflow_stops.close_steps_of_failed_run(cfg, wlogger, DAG, "run_1")
    train = step(store, task_id, "train")
    assert (
        train["status"] == "failed"
        and "the DAG run run_1 failed while train was running" in train["error_message"]
    )
    assert store.get_task(task_id, with_steps=False)["status"] == "failed"
    # the stop reached the training server (this task never started a job there)
    assert not any("could not stop" in e["message"] for e in store.logs_after(task_id))
    assert step(store, other, "train")["status"] == "running"  # another run's task is not touched
    airflow_stops.close_steps_of_failed_run(cfg, wlogger, DAG, "run_1")  # a second call changes nothing
    assert step(store, task_id, "train")["error_message"] == train["error_message"]
    airflow_stops.close_steps_of_failed_run(cfg, wlogger, DAG, "no_such_run")


def test_failed_run_of_another_dag_with_the_same_id_touches_nothing(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo, store: WorkflowStore, wlogger: WorkflowLogger
) -> None:
    """Run ids are unique only within one DAG, and whoever triggers a run picks its id: the
    failure of gpu2's run named like local's run neither fails local's step nor stops its job."""
    cfg = make_config(sshd, servers={"gpu2": {"host": sshd.host, "username": sshd.username}})
    task_id = running_train(store, "run_1")
    airflow_stops.close_steps_of_failed_run(cfg, wlogger, "fuxictr_workflow__gpu2", "run_1")
    airflow_stops.close_steps_of_failed_run(cfg, wlogger, "not_a_servers_dag", "run_1")
    assert step(store, task_id, "train")["status"] == "running"
    assert store.logs_after(task_id) == []


def test_failed_run_leaves_a_step_closed_meanwhile(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo, store: WorkflowStore, wlogger: WorkflowLogger
) -> None:
    """A mark's handling closes the step while the run's failure stops the jobs: the run's
    handling keeps the mark's reason and does not fail."""
    cfg = make_config(sshd)
    task_id = running_train(store, "run_1")
    real_get_task = store.get_task

    def get_task_then_closed(*args: object, **kwargs: object) -> dict:
        task = real_get_task(*args, **kwargs)
        store.get_task = real_get_task  # type: ignore[method-assign]
        airflow_stops.record_mark(wlogger, task_id, "train", "failed", True)
        return task

    store.get_task = get_task_then_closed  # type: ignore[method-assign]
    airflow_stops.close_steps_of_failed_run(cfg, wlogger, DAG, "run_1")
    assert step(store, task_id, "train")["error_message"].startswith("cancelled: train was marked failed")


def test_failed_run_taken_up_again_is_left_to_its_new_try(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo, store: WorkflowStore, wlogger: WorkflowLogger
) -> None:
    """The run's failure can be handled seconds late: a user has cleared the run meanwhile. If
    Airflow runs it again its handling neither stops the jobs nor fails the step; if a new try
    starts the step just after that check, the step is the new try's and stays running."""
    cfg = make_config(sshd)
    task_id = running_train(store, "run_1")
    airflow_stops.close_steps_of_failed_run(cfg, wlogger, DAG, "run_1", resumed=lambda: True)
    assert step(store, task_id, "train")["status"] == "running"
    assert store.logs_after(task_id) == []

    def new_try_starts_the_step() -> bool:
        store.start_step(task_id, "train")
        return False

    before = step(store, task_id, "train")["retry_count"]
    airflow_stops.close_steps_of_failed_run(cfg, wlogger, DAG, "run_1", resumed=new_try_starts_the_step)
    train = step(store, task_id, "train")
    assert (train["status"], train["retry_count"]) == ("running", before + 1), train
    assert store.get_task(task_id, with_steps=False)["status"] == "running"


def test_a_run_that_fails_while_the_gate_waits_fails_the_held_task(
    make_config: Callable[..., WorkflowConfig], store: WorkflowStore, wlogger: WorkflowLogger
) -> None:
    """No decision came (decision_timeout_h) or the gate was marked failed: the task the gate
    held is failed with that reason, unless Airflow runs the run again."""
    from fuxictr_workflow import gate_review

    cfg = make_config(quality_gate={"enabled": True})
    published, task_id = new_task(store), new_task(store, server="local", dag_id=DAG, dag_run_id="run_1")
    for tid, auc, names in [(published, 0.8, STAGE_NAMES), (task_id, 0.5, STAGE_NAMES[:-1])]:
        for name in names:
            store.start_step(tid, name)
            store.complete_step(tid, name, {"auc": auc, "logloss": 0.5} if name == "train" else {})
    record = gate_review.review(store, cfg, store.get_task(task_id))
    assert record is not None and record.decision == "waiting"
    store.quality_gates.hold(task_id, record)
    airflow_stops.close_steps_of_failed_run(cfg, wlogger, DAG, "run_1", resumed=lambda: True)
    assert store.get_task(task_id, with_steps=False)["status"] == "waiting"
    airflow_stops.close_steps_of_failed_run(cfg, wlogger, DAG, "run_1")
    task = store.get_task(task_id, with_steps=False)
    assert task["status"] == "failed" and "while the quality gate waited" in task["error_message"]


def test_a_mark_stops_the_stages_job_then_closes_its_running_step(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo, store: WorkflowStore, wlogger: WorkflowLogger
) -> None:
    """What the listener does for a train task instance marked failed by hand: say so, stop the
    job over SSH, fail the step with the mark as its reason. A stage that is not running, or a
    cancelled task (its run's failure stops its jobs), gets no such step change."""
    cfg = make_config(sshd)
    task_id = running_train(store, "run_1")
    airflow_stops.follow_mark(cfg, wlogger, DAG, "run_1", "train", "failed")
    said = [e["message"] for e in store.logs_after(task_id)]
    assert said[0] == "train was marked failed in Airflow; stopping its job on the training server", said
    assert not any("could not stop" in m for m in said), said
    train = step(store, task_id, "train")
    assert train["status"] == "failed"
    assert train["error_message"] == (
        "cancelled: train was marked failed in Airflow; its job on the training server was stopped"
    )
    airflow_stops.follow_mark(cfg, wlogger, DAG, "run_1", "train", "failed")  # the step is closed now
    assert len(store.logs_after(task_id)) == len(said)

    cancelled = running_train(store, "run_2")
    store.cancel_task(cancelled)
    logged = len(store.logs_after(cancelled))
    airflow_stops.follow_mark(cfg, wlogger, DAG, "run_2", "train", "failed")
    assert len(store.logs_after(cancelled)) == logged
    airflow_stops.follow_mark(cfg, wlogger, "fuxictr_workflow__nope", "run_2", "train", "failed")


def test_a_failed_run_is_acted_on_once_its_failure_can_be_read(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo, store: WorkflowStore, wlogger: WorkflowLogger
) -> None:
    """The scheduler tells listeners of a run's failure before committing it: run_failed reads
    the run until it shows failed. One that never does within the wait was cleared, and is left."""
    cfg = make_config(sshd)
    cleared = running_train(store, "run_1")
    airflow_stops.run_failed(cfg, wlogger, DAG, "run_1", read_states=lambda d, r: ("queued", [None]), wait=1)
    assert step(store, cleared, "train")["status"] == "running"

    task_id = running_train(store, "run_2")
    reads = iter([("running", ["running"])] * 2)

    def committed_on_the_third_read(dag_id: str, run_id: str) -> tuple[str | None, list[str | None]]:
        assert (dag_id, run_id) == (DAG, "run_2")
        return next(reads, ("failed", ["failed", "upstream_failed"]))

    airflow_stops.run_failed(cfg, wlogger, DAG, "run_2", read_states=committed_on_the_third_read, wait=30)
    assert step(store, task_id, "train")["status"] == "failed"


def test_the_failed_run_of_a_cancelled_task_stops_its_jobs(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo, store: WorkflowStore, wlogger: WorkflowLogger
) -> None:
    """The plugin's cancel marks the task's run failed; the run's failure stops the jobs (the
    cancel closed the steps): the stop reaches the server, and the task stays cancelled."""
    cfg = make_config(sshd)
    task_id = running_train(store, "run_1")
    store.cancel_task(task_id)
    airflow_stops.close_steps_of_failed_run(cfg, wlogger, DAG, "run_1")
    assert not any("could not stop" in e["message"] for e in store.logs_after(task_id))
    assert store.get_task(task_id, with_steps=False)["status"] == "cancelled"


def test_a_mark_of_a_stage_without_a_job_only_records_it(
    make_config: Callable[..., WorkflowConfig], store: WorkflowStore, wlogger: WorkflowLogger
) -> None:
    """data_upload's task process is stopped by Airflow itself: the listener only records the
    mark (no training server is reached: the config's server does not exist)."""
    cfg = make_config()
    task_id = new_task(store, server="local", dag_id=DAG, dag_run_id="run_1")
    store.start_step(task_id, "data_fetch")
    store.complete_step(task_id, "data_fetch", {})
    store.start_step(task_id, "data_upload")
    airflow_stops.follow_mark(cfg, wlogger, DAG, "run_1", "data_upload", "success")
    upload = step(store, task_id, "data_upload")
    assert upload["status"] == "skipped"
    assert upload["error_message"] == "data_upload was marked success in Airflow before it finished"
    assert [e["message"] for e in store.logs_after(task_id)] == [
        "data_upload was marked success in Airflow before it finished; the step is skipped"
    ]


def states(run_state: str) -> Callable[[str, str], tuple[str | None, list[str | None]]]:
    return lambda dag_id, run_id: (run_state, ["success"])


def test_a_run_marked_success_completes_its_task_with_the_unfinished_steps_skipped(
    make_config: Callable[..., WorkflowConfig], store: WorkflowStore, wlogger: WorkflowLogger
) -> None:
    cfg = make_config()
    task_id = running_train(store, "run_1")
    airflow_stops.run_succeeded(cfg, wlogger, DAG, "run_1", read_states=states("success"))
    task = store.get_task(task_id)
    assert task["status"] == "completed" and task["completed_at"] is not None, task
    assert [(s["status"], s["error_message"]) for s in task["steps"]] == [
        ("completed", None),
        ("completed", None),
        ("skipped", "the DAG run run_1 was marked success in Airflow before it finished"),
        *[("skipped", "the DAG run run_1 was marked success in Airflow before it ran")] * 3,
    ]
    assert [e["message"] for e in store.logs_after(task_id)] == [
        "the DAG run run_1 was marked success in Airflow: train, infer, result_download, hive_upload "
        "skipped, the task ends completed without their work"
    ]


def test_a_run_that_succeeded_by_itself_or_was_cleared_is_left(
    make_config: Callable[..., WorkflowConfig], store: WorkflowStore, wlogger: WorkflowLogger
) -> None:
    """Every pipeline run's success is followed: a task its last stage completed is not even
    read from Airflow; a run that never reads as succeeded (cleared again) is left to its try."""
    cfg = make_config()
    done = running_train(store, "run_1")
    for name in ("train", "infer", "result_download", "hive_upload"):
        store.start_step(done, name)
        store.complete_step(done, name, {})

    def unread(dag_id: str, run_id: str) -> tuple[str | None, list[str | None]]:
        raise AssertionError("a completed task's run need not be read")

    airflow_stops.run_succeeded(cfg, wlogger, DAG, "run_1", read_states=unread)
    cleared = running_train(store, "run_2")
    airflow_stops.run_succeeded(cfg, wlogger, DAG, "run_2", read_states=states("queued"), wait=1)
    assert step(store, cleared, "train")["status"] == "running"
    assert store.logs_after(cleared) == []


def test_a_run_failed_between_two_stages_fails_its_task(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo, store: WorkflowStore, wlogger: WorkflowLogger
) -> None:
    """No step runs, yet the task reads running: its run failed between two stages, or its stage
    failed with a retry to come that a mark called off. Nothing will run it: it fails."""
    cfg = make_config(sshd)
    between = running_train(store, "run_1")
    store.complete_step(between, "train", {})
    airflow_stops.close_steps_of_failed_run(cfg, wlogger, DAG, "run_1")
    task = store.get_task(between, with_steps=False)
    assert (task["status"], task["error_message"]) == (
        "failed",
        "the DAG run run_1 failed between two stages",
    )
    retrying = running_train(store, "run_2")
    store.fail_step(retrying, "train", "boom", final=False)
    assert store.get_task(retrying, with_steps=False)["status"] == "running"
    airflow_stops.close_steps_of_failed_run(cfg, wlogger, DAG, "run_2")
    task = store.get_task(retrying, with_steps=False)
    assert (task["status"], task["error_message"]) == (
        "failed",
        "the DAG run run_2 failed; train failed: boom",
    )
    # a task reset for a retry (pending) waits for the run its retry clears
    pending = new_task(store, server="local", dag_id=DAG, dag_run_id="run_3")
    airflow_stops.close_steps_of_failed_run(cfg, wlogger, DAG, "run_3")
    assert store.get_task(pending, with_steps=False)["status"] == "pending"
