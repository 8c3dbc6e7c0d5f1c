"""Which of Airflow's listener calls the plugin acts on (orchestration/listeners.py). What the
work does is tested in tests/test_airflow_stops.py; that Airflow calls the hooks in the API
server and the scheduler, on the real stack (tests/e2e/test_pipeline.py, tests/security)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.orchestration import airflow_stops, listeners

DAG = "fuxictr_workflow"  # the DAG of make_config's default server


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The work the hooks hand to a thread: (function, its arguments after config and logger)."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(listeners, "_in_background", lambda name, work, *args: calls.append((work, *args)))
    return calls


def ti(task_id: str, dag_id: str = DAG) -> SimpleNamespace:
    return SimpleNamespace(dag_id=dag_id, run_id="run_1", task_id=task_id)


def test_a_mark_by_hand_of_a_job_stage_is_acted_on(
    make_config: Callable[..., WorkflowConfig], started: list[tuple[Any, ...]]
) -> None:
    make_config()
    listeners.on_task_instance_failed(previous_state=None, task_instance=ti("train"), error="marked")
    listeners.on_task_instance_success(previous_state=None, task_instance=ti("infer"))
    listeners.on_task_instance_skipped(previous_state=None, task_instance=ti("train"))
    assert started == [
        (airflow_stops.follow_mark, DAG, "run_1", "train", "failed"),
        (airflow_stops.follow_mark, DAG, "run_1", "infer", "success"),
        (airflow_stops.follow_mark, DAG, "run_1", "train", "skipped"),
    ]


def test_tries_that_ended_by_themselves_tasks_that_are_no_stage_and_other_dags_are_not(
    make_config: Callable[..., WorkflowConfig], started: list[tuple[Any, ...]]
) -> None:
    make_config()
    listeners.on_task_instance_failed(previous_state="running", task_instance=ti("train"), error="boom")
    listeners.on_task_instance_success(previous_state="running", task_instance=ti("train"))
    listeners.on_task_instance_failed(previous_state=None, task_instance=ti("claim_task"), error="x")
    listeners.on_task_instance_failed(previous_state=None, task_instance=ti("train", "other_dag"), error="x")
    listeners.on_dag_run_success(dag_run=SimpleNamespace(dag_id="other_dag", run_id="run_1"), msg="")
    listeners.on_dag_run_failed(dag_run=SimpleNamespace(dag_id="other_dag", run_id="run_1"), msg="")
    assert started == []


def test_a_mark_by_hand_of_any_stage_is_recorded(
    make_config: Callable[..., WorkflowConfig], started: list[tuple[Any, ...]]
) -> None:
    make_config()
    listeners.on_task_instance_success(previous_state=None, task_instance=ti("data_upload"))
    listeners.on_task_instance_failed(previous_state=None, task_instance=ti("hive_upload"), error="x")
    assert started == [
        (airflow_stops.follow_mark, DAG, "run_1", "data_upload", "success"),
        (airflow_stops.follow_mark, DAG, "run_1", "hive_upload", "failed"),
    ]


def test_with_jobs_followed_from_a_worker_a_failed_mark_is_the_worker_operators(
    make_config: Callable[..., WorkflowConfig], started: list[tuple[Any, ...]]
) -> None:
    """Airflow stops that task process, and its on_kill stops the job and records the failure
    with whether the stop worked; a success mark the hook records (the stop is on_kill's)."""
    make_config(task={"follow_jobs_from": "worker"})
    listeners.on_task_instance_failed(previous_state=None, task_instance=ti("train"), error="marked")
    listeners.on_task_instance_success(previous_state=None, task_instance=ti("train"))
    assert started == [(airflow_stops.follow_mark, DAG, "run_1", "train", "success")]


def test_every_ended_pipeline_run_is_followed(
    make_config: Callable[..., WorkflowConfig], started: list[tuple[Any, ...]]
) -> None:
    make_config()
    listeners.on_dag_run_failed(dag_run=SimpleNamespace(dag_id=DAG, run_id="run_1"), msg="")
    listeners.on_dag_run_success(dag_run=SimpleNamespace(dag_id=DAG, run_id="run_2"), msg="")
    assert started == [(airflow_stops.run_failed, DAG, "run_1"), (airflow_stops.run_succeeded, DAG, "run_2")]


def test_the_plugin_registers_the_hooks() -> None:
    from fuxictr_workflow.orchestration.plugin import FuxiCTRWorkflowPlugin

    assert listeners in FuxiCTRWorkflowPlugin.listeners
