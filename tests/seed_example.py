"""The seed README's "Creating a Task" body, verbatim: the first request a user copies."""

SEED_README_BODY = {
    "name": "my_task",
    "experiment_id": "exp_001",
    "sample_sql": "SELECT * FROM train_data WHERE date = '2024-01-01'",
    "infer_sql": "SELECT * FROM infer_data WHERE date = '2024-01-02'",
    "hdfs_path": "/hdfs/path/to/data",
    "hive_table": "hive_db.output_table",
}
