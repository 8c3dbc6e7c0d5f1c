"""Bounds on what one task may cost: each stage's execution_timeout from config (on every task
of the DAG), the export size cap checked before anything is copied, and the transfer's refusal
of file names from a listing that would leave the item they belong to."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fuxictr_workflow.domain import paths
from fuxictr_workflow.domain.config import ConfigError, WorkflowConfig, parse_config
from fuxictr_workflow.files import handoff
from fuxictr_workflow.tracking import StageError
from fuxictr_workflow.transfer.errors import UnsafePath
from fuxictr_workflow.transfer.plan import check_listed, check_local
from tests.dag_tasks import DAG_TASKS

SERVER = {"servers": {"a": {"host": "gpu-1", "username": "ml"}}}
# the DAG's tasks and the stage each belongs to


def test_execution_timeouts_default_per_stage_and_fall_back_to_default() -> None:
    built_in = parse_config(SERVER, Path("/")).task
    assert (built_in.execution_timeout("train"), built_in.execution_timeout("data_upload")) == (86400, 21600)
    given = parse_config(
        {**SERVER, "task": {"execution_timeout_s": {"default": 600, "train": 60}}}, Path("/")
    )
    assert given.task.execution_timeout("train") == 60
    assert given.task.execution_timeout("infer") == 600  # the file's map replaces the built-in one


@pytest.mark.parametrize(
    ("timeouts", "message"),
    [
        ({"trian": 60}, "task.execution_timeout_s: Value error, unknown stage(s) trian"),
        ({"train": 0}, "task.execution_timeout_s.train: must be > 0"),
        ({"train": "1h"}, "task.execution_timeout_s.train: must be an integer"),
    ],
)
def test_a_bad_execution_timeout_names_the_key(timeouts: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**SERVER, "task": {"execution_timeout_s": timeouts}}, Path("/"))
    assert message.replace("Value error, ", "") in str(err.value)


def test_every_task_of_the_dag_has_its_stages_execution_timeout(
    make_config: Callable[..., WorkflowConfig],
) -> None:
    from fuxictr_workflow.orchestration.dag_factory import build_dag

    timeouts = {"default": 900, "data_fetch": 901, "data_upload": 902, "train": 903, "infer": 904}
    cfg = make_config(task={"execution_timeout_s": timeouts}, quality_gate={"decision_timeout_h": 5})
    dag = build_dag(cfg.default_server, cfg)
    assert set(dag.task_dict) == set(DAG_TASKS)
    stages = {t: stage for t, stage in DAG_TASKS.items() if stage != "gate"}
    seen = {task_id: dag.get_task(task_id).execution_timeout for task_id in stages}
    assert seen == {t: timedelta(seconds=timeouts.get(stage, 900)) for t, stage in stages.items()}
    # the gate's wait for a person is bounded by its own key, and nothing kills it before it parks
    (gate,) = (dag.get_task(t) for t, stage in DAG_TASKS.items() if stage == "gate")
    assert (gate.execution_timeout, gate.response_timeout) == (None, timedelta(hours=5))


def _export(hdfs_root: Path, task_id: int, rows: dict[str, int]) -> None:
    for name, n in rows.items():
        directory = Path(paths.hdfs_task_dir(str(hdfs_root), task_id, name))
        directory.mkdir(parents=True)
        pq.write_table(pa.table({"id": list(range(n))}), directory / "part-00000.parquet")
        (directory / "_SUCCESS").write_text("")  # not data: never counted


def test_an_export_over_the_cap_fails_naming_the_cap_and_its_size(
    make_config: Callable[..., WorkflowConfig], tmp_path: Path
) -> None:
    _export(tmp_path / "hdfs", 7, {"sample": 5000, "infer": 10})
    task = {"id": 7, "hdfs_path": str(tmp_path / "hdfs")}
    sizes = handoff.export_sizes(make_config(), task)
    total = sum(sizes.values())
    cfg = make_config(storage={"max_export_bytes": total - 1})
    with pytest.raises(StageError) as err:
        handoff.stage_datasets(cfg, task, print)
    assert not err.value.retryable
    assert f"the export is {total:,} bytes on HDFS" in str(err.value)
    assert f"over storage.max_export_bytes ({total - 1:,} bytes)" in str(err.value)
    assert not paths.staging_task_dir(cfg.storage.staging_dir, 7).exists()  # nothing was copied
    # at the cap, or with no cap, the export is staged, into a staging dir only this user reads
    old_umask = os.umask(0o022)
    try:
        for cap in (total, None):
            cfg = make_config(storage={"max_export_bytes": cap})
            assert handoff.stage_datasets(cfg, task, print)["sample_rows"] == 5000
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(cfg.storage.staging_dir).st_mode) == 0o700


@pytest.mark.parametrize(
    "name", ["../escape", "a/../../escape", "/etc/passwd", "a//b", "./a", "a\x00b", "a\nb", 7]
)
def test_a_listed_name_that_leaves_its_item_is_refused(name: object) -> None:
    with pytest.raises(UnsafePath, match="listing of /srv/task_1/output"):
        check_listed(name, "/srv/task_1/output")


def test_plain_listed_names_pass_and_land_inside_the_staging_root(tmp_path: Path) -> None:
    assert check_listed("", "/x") == ""
    assert check_listed("sub/part-0.parquet", "/x") == "sub/part-0.parquet"
    root = tmp_path / "staging"
    (root / "task_1").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "task_1" / "link").symlink_to(tmp_path / "elsewhere")
    assert check_local(str(root / "task_1" / "a.parquet"), str(root)) == str(root / "task_1" / "a.parquet")
    with pytest.raises(UnsafePath, match="outside the staging root"):
        check_local(str(root / "task_1" / "link" / "a.parquet"), str(root))


def test_a_stage_past_its_execution_timeout_fails_naming_the_key(
    make_config: Callable[..., WorkflowConfig],
) -> None:
    """Airflow's own timeout (SIGALRM in the task process, AirflowTaskTimeout) firing inside a
    stage: the step fails with a message naming the limit and its config key, and the stage's
    on_kill runs (what stops beeline, or a train job)."""
    import threading

    from airflow.sdk import BaseOperator
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.timeout import timeout

    from fuxictr_workflow.domain.stages import Stage
    from fuxictr_workflow.orchestration.operators.base import WorkflowStageMixin
    from fuxictr_workflow.workflow_log import get_logger
    from tests.conftest import new_task
    from tests.stage_runs import stage_context

    make_config(task={"execution_timeout_s": {"default": 1}})
    store = get_logger().store
    task_id = new_task(store)
    killed = threading.Event()

    class SlowUpload(WorkflowStageMixin, BaseOperator):
        stage = Stage.DATA_UPLOAD

        def execute_stage(self, context: object, run: object) -> None:
            threading.Event().wait(120)  # the alarm comes first

        def on_kill(self) -> None:
            killed.set()

    with pytest.raises(StageError) as err, timeout(1):  # as Airflow's task runner wraps execute
        SlowUpload(task_id="data_upload").execute(stage_context(task_id, "data_upload"))
    assert not isinstance(err.value, AirflowTaskTimeout) and err.value.retryable
    message = (
        "data_upload ran longer than its execution_timeout of 1 s (config task.execution_timeout_s.default)"
    )
    assert str(err.value).startswith(message)
    step = next(s for s in store.get_task(task_id)["steps"] if s["step_name"] == "data_upload")
    assert step["status"] == "failed" and step["error_message"].startswith(message)
    assert killed.is_set()
