"""One stack for the package: started before its first test, stopped after its last, healed
before every test (a fault test stops services; one failure must not fail the tests after it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts import demo
from tests.e2e.stack import INFER_ROWS, SAMPLE_ROWS, Stack, free_port


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("e2e")
    services = demo.Services(
        work,
        free_port(),
        sample_rows=SAMPLE_ROWS,
        infer_rows=INFER_ROWS,
        config={
            # small chunks: a transfer spans enough time and chunks for a fault to land mid-way
            "transfer": {"chunk_size": 4 * 1024, "parallel_workers": 1, "max_retries": 4},
            "task": {"heartbeat_interval": 2, "retry_delay_s": 5},
        },
        airflow_env={
            # a task whose process died is noticed within 30 s instead of Airflow's 5 minutes
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "15",
            # a task left running by a killed scheduler is reset within 10 s, not 5 minutes
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
        },
    )
    try:
        services.start()
        yield Stack(services)
    finally:
        services.stop()


@pytest.fixture(autouse=True)
def healed(stack: Stack) -> None:
    """Every service a test needs is up before it starts, whatever the test before it stopped
    or broke, so one failing fault test cannot fail the tests after it."""
    restarted = stack.services.heal()
    if restarted:
        print(f"restarted before this test: {', '.join(restarted)}")
