"""The Airflow plugin: registered through the `airflow.plugins` entry point (setup.cfg).

Mounts the task API + workflow view on the API server at /api/workflow, adds the view to
Airflow's nav and as a tab on DAG run pages, and registers the listener hooks through which
the workflow follows marks and run failures in Airflow (listeners.py).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from fuxictr_workflow.api import URL_PREFIX
from fuxictr_workflow.api.app import app
from fuxictr_workflow.orchestration import listeners as workflow_listeners


class FuxiCTRWorkflowPlugin(AirflowPlugin):
    name = "fuxictr_workflow"
    listeners = [workflow_listeners]
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "FuXiCTR Workflow API"}]
    external_views = [
        {
            "name": "FuXiCTR Workflow",
            "href": f"{URL_PREFIX}/ui/",
            "url_route": "fuxictr-workflow",
            "destination": "nav",
        },
        {
            "name": "FuXiCTR Workflow",
            "href": f"{URL_PREFIX}/ui/?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "url_route": "fuxictr-workflow-run",
            "destination": "dag_run",
        },
    ]
