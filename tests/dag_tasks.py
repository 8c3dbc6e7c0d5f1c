"""The pipeline DAG's task ids in the order they run, each with the stage it belongs to (the
claim task belongs to none: its settings are the `default` ones; the quality gate's wait is
bounded by its decision timeout, not a stage's execution_timeout)."""

from __future__ import annotations

DAG_TASKS = {
    "claim_task": "default",
    "data_fetch.hive_export": "data_fetch",
    "data_fetch.hdfs_download": "data_fetch",
    "data_upload": "data_upload",
    "train": "train",
    "infer": "infer",
    "result_download": "result_download",
    "hive_upload.quality_gate": "gate",
    "hive_upload.hdfs_upload": "hive_upload",
    "hive_upload.hive_load": "hive_upload",
}
# the stage tasks: what `airflow tasks test` can run alone
STAGE_TASKS = tuple(task for task, stage in DAG_TASKS.items() if stage not in ("default", "gate"))
