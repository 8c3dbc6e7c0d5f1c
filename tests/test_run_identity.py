"""Which workflow task a DAG run works for (operators/base.py resolve_task_id) and when
claim_task parks beside `airflow tasks test` (airflow_runs.py): the decisions themselves, on a
real store. tests/security/test_run_identity.py makes the same attacks through the real
api-server, with runs Airflow created."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.orchestration import airflow_runs
from fuxictr_workflow.orchestration.operators.base import resolve_task_id
from fuxictr_workflow.store import WorkflowStore, get_store
from tests.conftest import new_task

MAIN, OTHER = "fuxictr_workflow", "fuxictr_workflow__gpu2"
FIELDS = {
    "name": "ui",
    "experiment_id": "e",
    "sample_sql": "SELECT 1",
    "infer_sql": "SELECT 2",
    "hdfs_path": "/tmp/x",
    "hive_table": "hive_db.t",
}


@pytest.fixture
def two_servers(make_config: Callable[..., WorkflowConfig]) -> tuple[WorkflowConfig, WorkflowStore]:
    """Servers local (DAG fuxictr_workflow, the default) and gpu2 (fuxictr_workflow__gpu2)."""
    cfg = make_config(servers={"gpu2": {"host": "127.0.0.1", "username": "nobody"}})
    store = get_store(cfg.store.url)
    yield cfg, store  # type: ignore[misc]
    store.dispose()


def context(dag_id: str, run_id: str, conf: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
    return {
        "dag_run": SimpleNamespace(dag_id=dag_id, run_id=run_id, conf=conf),
        "params": {"task_id": None, **params},
    }


def refusal(ctx: dict[str, Any], cfg: WorkflowConfig, store: WorkflowStore) -> str:
    with pytest.raises(AirflowFailException) as refused:
        resolve_task_id(ctx, store, cfg)
    return str(refused.value)


def test_a_conf_task_id_is_honoured_only_in_the_run_the_api_recorded_for_it(
    two_servers: tuple[WorkflowConfig, WorkflowStore],
) -> None:
    cfg, store = two_servers
    task = new_task(store, server="local")
    store.set_dag_run(task, MAIN, "workflow_task_1__ab")
    assert resolve_task_id(context(MAIN, "workflow_task_1__ab", {"task_id": task}), store, cfg) == task
    # the same run id in the other server's DAG, another run of the same DAG, the form's param
    attacks = [
        context(OTHER, "workflow_task_1__ab", {"task_id": task}),
        context(MAIN, "manual__squat", {"task_id": task}),
        context(MAIN, "manual__form", {}, task_id=task),
    ]
    for ctx in attacks:
        message = refusal(ctx, cfg, store)
        assert message.startswith(f"task_id: workflow task {task} was not started by this DAG run"), message
    # an unknown task gets the same answer: the refusal does not tell which ids exist
    unknown = refusal(context(OTHER, "workflow_task_1__ab", {"task_id": 999_999}), cfg, store)
    assert unknown.startswith("task_id: workflow task 999999 was not started by this DAG run"), unknown
    assert store.get_task(task, with_steps=False)["dag_run_id"] == "workflow_task_1__ab"
    assert len(store.list_tasks()) == 1


def test_a_run_without_task_id_gets_its_own_task_in_its_own_dag(
    two_servers: tuple[WorkflowConfig, WorkflowStore],
) -> None:
    """The same run id in two DAGs is two runs: two tasks, each on its DAG's server whatever
    the params say."""
    cfg, store = two_servers
    main = resolve_task_id(context(MAIN, "manual__same", None, **FIELDS), store, cfg)
    other = resolve_task_id(context(OTHER, "manual__same", None, **FIELDS, server="local"), store, cfg)
    assert main != other
    assert resolve_task_id(context(MAIN, "manual__same", None, **FIELDS), store, cfg) == main
    rows = {t: store.get_task(t, with_steps=False) for t in (main, other)}
    assert [(r["dag_id"], r["server"]) for r in rows.values()] == [(MAIN, "local"), (OTHER, "gpu2")]
    assert "is not the DAG of a configured training server" in refusal(
        context("some_other_dag", "manual__same", None, **FIELDS), cfg, store
    )


def test_tasks_test_may_name_a_task_of_its_own_dag_only(
    two_servers: tuple[WorkflowConfig, WorkflowStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`airflow tasks test -t '{"task_id": N}'` (its process has AIRFLOW_TEST_MODE) re-runs a
    stage of any task of the DAG's server, whichever run it is bound to, never another's."""
    cfg, store = two_servers
    task = new_task(store, server="local")
    store.set_dag_run(task, MAIN, "workflow_task_1__ab")
    ctx = context(MAIN, "__airflow_temporary_run_x__", None, task_id=task)
    assert "was not started by this DAG run" in refusal(ctx, cfg, store)  # without test mode
    monkeypatch.setenv("AIRFLOW_TEST_MODE", "True")
    assert resolve_task_id(ctx, store, cfg) == task
    other = refusal(context(OTHER, "__airflow_temporary_run_x__", None, task_id=task), cfg, store)
    assert other.startswith(f"task_id: workflow task {task} is a task of DAG {MAIN}, not of {OTHER}"), other
    assert "does not exist" in refusal(context(MAIN, "r", None, task_id=999_999), cfg, store)


NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("executing", "fieldless", "started", "wait"),
    [
        (["train"], False, NOW, airflow_runs.PARK_RECHECK),  # a stage runs outside the scheduler
        (["train"], True, None, airflow_runs.PARK_RECHECK),
        ([], True, NOW - timedelta(seconds=5), airflow_runs.GRACE_POLL),  # maybe a fresh tasks-test run
        ([], True, NOW - airflow_runs.TEST_RUN_GRACE, None),  # waited long enough: act
        ([], True, None, None),
        ([], False, NOW, None),  # a run with fields acts at once, whatever its id
    ],
)
def test_claim_waits_only_beside_a_stage_executing_out_of_band(
    executing: list[str], fieldless: bool, started: datetime | None, wait: timedelta | None
) -> None:
    assert airflow_runs.claim_wait(executing=executing, fieldless=fieldless, started=started, now=NOW) == wait


def test_executing_elsewhere_counts_only_states_execution_sets() -> None:
    states = {
        "claim_task": "running",
        "data_fetch.hive_export": "queued",  # `airflow tasks test` queues its task first
        "data_upload": "running",
        "train": "deferred",
        "infer": "success",  # a user can mark these through Airflow's API
        "result_download": "failed",
        "hive_upload.hdfs_upload": "skipped",
        "hive_upload.hive_load": None,  # and a clear resets to none
    }
    assert airflow_runs.executing_elsewhere(states, "claim_task") == [
        "data_fetch.hive_export",
        "data_upload",
        "train",
    ]
    assert airflow_runs.executing_elsewhere({"claim_task": "running"}, "claim_task") == []
