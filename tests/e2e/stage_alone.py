"""One stage task of the real DAG run in the test's process, as `airflow tasks test` runs it in
its own: in a temporary DAG run of the `airflow tasks test` kind, with AIRFLOW_TEST_MODE set
(the train and infer jobs are then followed in the foreground), against the e2e stack's config,
store, Hive and training server. Airflow's CLI machinery around it (its temporary run, the
scheduler beside it) is what the CLI runs in test_single_stage cover; this covers the stage's
own behaviour for the other stage tasks at a fraction of a CLI start each.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

from scripts import demo
from tests.e2e.stack import Stack
from tests.stage_runs import run_stage

# How Airflow names the run `airflow tasks test` makes (task_command._generate_temporary_run_id);
# the package never decides anything from it, the tests use it to find those runs.
TASKS_TEST_RUN_PREFIX = "__airflow_temporary_run_"


@contextmanager
def stack_env(stack: Stack, config_path: Path | None = None) -> Iterator[None]:
    """The stack's config (or `config_path`, a variant for this process only) and connections,
    and AIRFLOW_TEST_MODE, for the duration."""
    keep = ("FUXICTR_WORKFLOW_CONFIG", "AIRFLOW_CONN_")
    changes = {k: v for k, v in stack.services.env.items() if k.startswith(keep)}
    changes["AIRFLOW_TEST_MODE"] = "True"
    if config_path is not None:
        changes["FUXICTR_WORKFLOW_CONFIG"] = str(config_path)
    old = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class TaskInstance(SimpleNamespace):
    """The parts of Airflow's task instance the stages use; DAG run counts come from Airflow's
    REST API, as the task runner's come from its execution API."""

    def __init__(self, stack: Stack, dag_id: str, run_id: str, task_id: str) -> None:
        super().__init__(dag_id=dag_id, run_id=run_id, task_id=task_id, try_number=1, max_tries=0)
        self._stack = stack

    def get_dr_count(self, dag_id: str, run_ids: list[str], states: list[str]) -> int:
        count = 0
        for run_id in run_ids:
            path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
            try:
                state = demo.api(self._stack.port, self._stack.token, "GET", path)["state"]
            except Exception:  # noqa: BLE001 - a run Airflow does not know counts as none
                continue
            count += state in states
        return count


def run_alone(
    stack: Stack, airflow_task: str, params: dict[str, Any], config_path: Path | None = None
) -> Any:
    """Run one stage task of the stack's default DAG with `-t params`; returns its result.
    A stage failure raises what it raises under `airflow tasks test` (AirflowFailException).
    `config_path`: a variant of the stack's config seen by this stage only (the stack's own
    processes keep reading theirs)."""
    from fuxictr_workflow.domain.config import load_config
    from fuxictr_workflow.orchestration.dag_factory import build_dag
    from fuxictr_workflow.orchestration.dag_params import dag_id_for

    cfg = load_config(stack.config_path)
    dag = build_dag(cfg.default_server, cfg)
    op = dag.get_task(airflow_task)
    run_id = f"{TASKS_TEST_RUN_PREFIX}{datetime.now(UTC).isoformat()}__"
    dag_id = dag_id_for(cfg.default_server, cfg.default_server)
    context = {
        "dag_run": SimpleNamespace(conf={}, run_id=run_id, dag_id=dag_id),
        "params": params,
        "ti": TaskInstance(stack, dag_id, run_id, airflow_task),
    }
    with stack_env(stack, config_path):
        return run_stage(op, context)
