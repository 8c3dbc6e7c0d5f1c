"""The maintenance DAG: `fuxictr_workflow_maintenance` runs the retention clean-up on
retention.schedule (retention.py). Built only when retention.days is set."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from fuxictr_workflow.domain.config import WorkflowConfig

MAINTENANCE_DAG_ID = "fuxictr_workflow_maintenance"


def run_cleanup() -> dict[str, int]:
    """The DAG's one task: clean up with the config every process reads; fails on errors so
    the run shows red and the next one tries again."""
    import logging

    from fuxictr_workflow.domain.config import get_config
    from fuxictr_workflow.retention import cleanup
    from fuxictr_workflow.store import get_store

    cfg = get_config()
    report = cleanup(cfg, get_store(cfg.store.url))
    log = logging.getLogger(__name__)
    for line in report.lines():
        log.info("%s", line)
    if report.errors:
        raise RuntimeError(f"cleanup finished with {len(report.errors)} error(s): {report.errors[0]}")
    return {"expired_tasks": len(report.expired), "removed": len(report.removed)}


def build_maintenance_dag(cfg: WorkflowConfig) -> DAG | None:
    if cfg.retention.days is None:
        return None
    from airflow.providers.standard.operators.python import PythonOperator

    with DAG(
        dag_id=MAINTENANCE_DAG_ID,
        description=f"Deletes files of FuXiCTR tasks finished more than {cfg.retention.days} days ago",
        schedule=cfg.retention.schedule,
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["fuxictr", "maintenance"],
        default_args={"owner": "fuxictr", "retries": 1, "retry_delay": timedelta(minutes=10)},
    ) as dag:
        PythonOperator(
            task_id="cleanup",
            python_callable=run_cleanup,
            execution_timeout=timedelta(seconds=cfg.task.execution_timeout("default")),
        )
    return dag
