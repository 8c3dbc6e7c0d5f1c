"""The pipeline DAG's shape as Airflow schedules it: the stages in order behind claim_task,
train and infer in the server's pool, later stages first where runs queue for the same slots."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.orchestration.dag_params import pool_for
from tests.dag_tasks import DAG_TASKS

ORDER = list(DAG_TASKS)


def test_stages_chain_in_order_and_pool_train_and_infer(make_config: Callable[..., WorkflowConfig]) -> None:
    from fuxictr_workflow.orchestration.dag_factory import build_dag

    cfg = make_config()
    dag = build_dag(cfg.default_server, cfg)
    assert [t.task_id for t in dag.topological_sort()] == ORDER
    pooled = {t.task_id for t in dag.tasks if t.pool == pool_for(cfg.default_server)}
    assert pooled == {"train", "infer"}


def test_a_run_further_along_goes_first_in_the_training_pool(
    make_config: Callable[..., WorkflowConfig],
) -> None:
    """The weights the scheduler ranks queued task instances by, from the DAG as it serializes
    it: Airflow's default rule (downstream) would rank a new run's train above an older run's
    infer, so with one training slot each run's predictions would wait for the next training."""
    from airflow.serialization.serialized_objects import DagSerialization

    from fuxictr_workflow.orchestration.dag_factory import build_dag

    cfg = make_config()
    served = DagSerialization.from_dict(DagSerialization.to_dict(build_dag(cfg.default_server, cfg)))
    weights = []
    for task_id in ORDER:
        task = served.get_task(task_id)
        weights.append(task.weight_rule.get_weight(SimpleNamespace(task=task)))
    assert weights == sorted(weights) and len(set(weights)) == len(weights), dict(
        zip(ORDER, weights, strict=True)
    )
