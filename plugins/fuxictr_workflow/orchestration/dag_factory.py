"""Builds the pipeline DAG: the six stages in order, one DAG per configured training server.

The stages follow a `claim_task` task (operators/claim.py), which makes the run its workflow
task's one active run; it is the DAG's only root.

Each server gets its own DAG (the default server's is ``fuxictr_workflow``) so that its
train and infer tasks can sit in that server's pool (``fuxictr_train_<server>``, slots =
``max_concurrent_trainings``): Airflow fixes a task's pool when the DAG is parsed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, TaskGroup, chain

from fuxictr_workflow.domain.config import WorkflowConfig, get_config
from fuxictr_workflow.domain.stages import Stage
from fuxictr_workflow.orchestration.dag_params import CLAIM_TASK_ID, dag_id_for, param_schemas, pool_for

DOC = """
### FuXiCTR workflow

Hive → training server → Hive in six stages: data_fetch, data_upload, train, infer,
result_download, hive_upload. hive_upload starts with the quality gate (config
`quality_gate`): a model clearly worse than the experiment's published one waits for
Approve / Reject under Required Actions. Trigger with the six fields below (or through
`POST /api/workflow/tasks`); follow it in the **FuXiCTR Workflow** view.
"""


def build_dag(server: str, cfg: WorkflowConfig) -> DAG:
    from fuxictr_workflow.orchestration.operators.claim import ClaimTaskOperator
    from fuxictr_workflow.orchestration.operators.fuxictr import InferOperator, TrainOperator
    from fuxictr_workflow.orchestration.operators.gate import GATE_TASK_ID, QualityGateOperator
    from fuxictr_workflow.orchestration.operators.hive import (
        HdfsDownloadOperator,
        HdfsUploadOperator,
        HiveExportOperator,
        HiveLoadOperator,
    )
    from fuxictr_workflow.orchestration.operators.transfer import (
        ChunkedDownloadOperator,
        ChunkedUploadOperator,
    )

    def timeout(stage: str) -> timedelta:
        # task.execution_timeout_s; a stage in two tasks gives each part the stage's time
        return timedelta(seconds=cfg.task.execution_timeout(stage))

    default_args = {
        "owner": "fuxictr",
        "retries": cfg.task.retries,
        "retry_delay": timedelta(seconds=cfg.task.retry_delay_s),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        # a stage weighs as much as the stages before it: where runs queue for the same slots
        # (the server's training pool), the run furthest along goes first, so an infer is not
        # kept waiting behind another run's new training and each run finishes sooner
        "weight_rule": "upstream",
    }
    with DAG(
        dag_id=dag_id_for(server, cfg.default_server),
        description=f"FuXiCTR pipeline on training server {server}",
        schedule=None,
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=32,
        default_args=default_args,
        params={name: Param(**schema) for name, schema in param_schemas(server).items()},
        tags=["fuxictr", f"server:{server}"],
        doc_md=DOC,
    ) as dag:
        claim = ClaimTaskOperator(task_id=CLAIM_TASK_ID, execution_timeout=timeout("default"))
        with TaskGroup(Stage.DATA_FETCH.value) as data_fetch:
            fetch = timeout(Stage.DATA_FETCH)
            chain(
                HiveExportOperator(task_id="hive_export", execution_timeout=fetch),
                HdfsDownloadOperator(task_id="hdfs_download", execution_timeout=fetch),
            )
        upload = ChunkedUploadOperator(
            task_id=Stage.DATA_UPLOAD.value, execution_timeout=timeout(Stage.DATA_UPLOAD)
        )
        train = TrainOperator(
            task_id=Stage.TRAIN.value, pool=pool_for(server), execution_timeout=timeout(Stage.TRAIN)
        )
        infer = InferOperator(
            task_id=Stage.INFER.value, pool=pool_for(server), execution_timeout=timeout(Stage.INFER)
        )
        download = ChunkedDownloadOperator(
            task_id=Stage.RESULT_DOWNLOAD.value, execution_timeout=timeout(Stage.RESULT_DOWNLOAD)
        )
        with TaskGroup(Stage.HIVE_UPLOAD.value) as hive_upload:
            load = timeout(Stage.HIVE_UPLOAD)
            chain(
                # first in the group: clearing hive_upload (a retry) asks the gate again
                QualityGateOperator(
                    task_id=GATE_TASK_ID,
                    response_timeout=timedelta(hours=cfg.quality_gate.decision_timeout_h),
                ),
                HdfsUploadOperator(task_id="hdfs_upload", execution_timeout=load),
                HiveLoadOperator(task_id="hive_load", execution_timeout=load),
            )
        chain(claim, data_fetch, upload, train, infer, download, hive_upload)
    return dag


def build_dags(cfg: WorkflowConfig | None = None) -> list[DAG]:
    cfg = cfg or get_config()
    return [build_dag(server, cfg) for server in cfg.servers]
