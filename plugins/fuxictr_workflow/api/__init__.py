"""The plugin's FastAPI app: the seed's task API on the Airflow API server, plus the workflow view."""

# where the plugin mounts the app on the API server (plugin.py)
URL_PREFIX = "/api/workflow"
