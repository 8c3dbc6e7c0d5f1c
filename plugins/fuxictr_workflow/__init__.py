"""fuxictr-workflow: run FuXiCTR CTR pipelines (Hive -> training server -> Hive) from Airflow 3."""

__version__ = "0.1.0"
