"""The plugin's FastAPI app: the seed's task API on the Airflow API server, plus the workflow view."""
