"""Code that runs ON the training server (only Python + fuxictr there; no Airflow)."""
