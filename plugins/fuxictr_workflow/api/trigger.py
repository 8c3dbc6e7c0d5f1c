"""DAG runs for workflow tasks, through Airflow's own functions (in the API server process)."""

from __future__ import annotations

from typing import Any


class TriggerError(RuntimeError):
    """The DAG run could not be created; the message says why and what to do."""


def run_id_for(task_id: int, attempt: int = 0) -> str:
    return f"workflow_task_{task_id}" + (f"_retry_{attempt}" if attempt else "")


def trigger(dag_id: str, run_id: str, conf: dict[str, Any], user_name: str) -> str:
    """Create a queued manual DAG run; raises TriggerError with a user-facing reason."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody
    from airflow.models.dag import DagModel
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    with create_session() as session:
        model = session.scalar(select(DagModel).where(DagModel.dag_id == dag_id))
        if model is None or model.is_stale:
            raise TriggerError(
                f"DAG {dag_id} is not in Airflow (is dags/fuxictr_workflow.py in the DAGs folder?)"
            )
        if model.has_import_errors:
            raise TriggerError(f"DAG {dag_id} has import errors; see the Airflow UI's import errors")
        if model.is_paused:
            raise TriggerError(f"DAG {dag_id} is paused; unpause it in the Airflow UI, then retry the task")
        dag = DBDagBag().get_latest_version_of_dag(dag_id, session=session)
        if dag is None:
            raise TriggerError(f"DAG {dag_id} has not been serialized yet; wait for the dag-processor")
        try:
            params = TriggerDAGRunPostBody(dag_run_id=run_id, conf=conf, logical_date=None).validate_context(
                dag
            )
            dag.create_dagrun(
                run_id=params["run_id"],
                logical_date=params["logical_date"],
                data_interval=params["data_interval"],
                run_after=params["run_after"],
                conf=params["conf"],
                run_type=DagRunType.MANUAL,
                triggered_by=DagRunTriggeredByType.REST_API,
                triggering_user_name=user_name,
                state=DagRunState.QUEUED,
                partition_key=None,
                partition_date=params["partition_date"],
                session=session,
            )
        except Exception as err:  # param validation, duplicate run id, DB errors
            raise TriggerError(f"could not trigger DAG {dag_id}: {err}") from err
    return run_id


def fail_run(dag_id: str, run_id: str) -> None:
    """Stop a run: running task instances fail, pending ones are skipped."""
    from airflow.api.common.mark_tasks import set_dag_run_state_to_failed
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session

    with create_session() as session:
        dag = DBDagBag().get_latest_version_of_dag(dag_id, session=session)
        if dag is not None:
            set_dag_run_state_to_failed(dag=dag, run_id=run_id, commit=True, session=session)
