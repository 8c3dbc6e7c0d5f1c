"""Which kind of DAG run a stage is in: a pipeline run, or the run `airflow tasks test` makes.

`airflow tasks test DAG TASK` (without a run id) creates a temporary DAG run named
``__airflow_temporary_run_<time>__`` in state *running*, runs TASK inside the command's own
process (which it marks with ``AIRFLOW_TEST_MODE=True``) and deletes the run when TASK ends.
A scheduler sees a running run and starts the run's other tasks too; those must not act
(only TASK is the stage under test), and must not fail, or the scheduler would mark TASK
``upstream_failed`` under the test.
"""

from __future__ import annotations

import os

TASKS_TEST_RUN_PREFIX = "__airflow_temporary_run_"


def is_tasks_test_run(run_id: str) -> bool:
    """The DAG run was made by `airflow tasks test` for one stage."""
    return run_id.startswith(TASKS_TEST_RUN_PREFIX)


def in_tasks_test_command() -> bool:
    """This process is an `airflow tasks test` command (its task runs in-process)."""
    return os.environ.get("AIRFLOW_TEST_MODE", "").strip().lower() == "true"


# A pipeline run still owns its task while it may start stages; any later state frees it.
ACTIVE_RUN_STATES = ("queued", "running")
