"""Which kind of DAG run a stage is in: a pipeline run, or the run `airflow tasks test` makes.

`airflow tasks test DAG TASK` (without a run id) creates a temporary DAG run in state
*running* (run type ``manual``, no conf), runs TASK inside the command's own process (which
it marks with ``AIRFLOW_TEST_MODE=True``) and deletes the run when TASK ends. A scheduler sees
a running run and starts the run's root, claim_task; it must not act (only TASK is the stage
under test) and must not fail, or the scheduler would mark TASK ``upstream_failed`` under the
test.

Nothing in the run itself tells such a run from one a user triggered: its id is
``__airflow_temporary_run_<time>__``, but anyone allowed to trigger the DAG can choose that
id, and its run type is ``manual`` like a trigger's. What does tell it is Airflow's own state:
in a run the scheduler drives nothing executes before claim_task (the DAG's only root) has
succeeded, so a stage that is executing while claim_task starts was started outside the
scheduler, by `airflow tasks test`. claim_task parks only then (see :func:`claim_wait`).
(A user who clears claim_task alone while a later stage runs makes it wait for that stage too.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timedelta

# A pipeline run still owns its task while it may start stages; any later state frees it.
ACTIVE_RUN_STATES = ("queued", "running")
# States a stage cannot be in while claim_task, its only upstream, has not succeeded, unless it
# is being run outside the scheduler: `airflow tasks test` queues its task instance, runs it
# (running; deferred and scheduled around an inline trigger: airflow.sdk.definitions.dag._run_task).
# Users can mark success, failed or skipped through Airflow's API, never these; a clear resets
# to none.
EXECUTING_STATES = frozenset({"queued", "scheduled", "running", "deferred"})
# claim_task parked beside a stage under test looks again this often: the command deletes the
# run when its stage ends; if the command was killed, its stage stops counting as executing
# once the scheduler fails it, and the run goes on as any run without a task would.
PARK_RECHECK = timedelta(minutes=10)
# A run with neither a task nor task fields may be one `airflow tasks test` just made, whose
# stage has not reached Airflow's "running" yet: claim_task looks again for this long after the
# run started, every GRACE_POLL, before it acts as in any other run (bounded: such a run cannot
# hold a slot of max_active_runs for longer).
TEST_RUN_GRACE = timedelta(seconds=90)
GRACE_POLL = timedelta(seconds=15)


def in_tasks_test_command() -> bool:
    """This process is an `airflow tasks test` command (its task runs in-process). Only that
    command sets AIRFLOW_TEST_MODE, in its own environment (airflow/cli/commands/task_command.py)."""
    return os.environ.get("AIRFLOW_TEST_MODE", "").strip().lower() == "true"


def executing_elsewhere(states: Mapping[str, str | None], own_task_id: str) -> list[str]:
    """The run's tasks, other than `own_task_id`, that are executing now."""
    return sorted(t for t, state in states.items() if t != own_task_id and state in EXECUTING_STATES)


def claim_wait(
    *, executing: list[str], fieldless: bool, started: datetime | None, now: datetime
) -> timedelta | None:
    """How long claim_task waits before looking again, or None when it acts now.

    `executing`: the run's other tasks executing now; `fieldless`: the run names no task and
    gives no task field (the shape of a temporary `tasks test` run); `started`: when the run
    started (None: unknown)."""
    if executing:
        return PARK_RECHECK
    if fieldless and started is not None and now - started < TEST_RUN_GRACE:
        return GRACE_POLL
    return None
