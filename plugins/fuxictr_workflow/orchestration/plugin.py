"""The Airflow plugin: registered through the `airflow.plugins` entry point (setup.cfg).

Mounts the task API + workflow view on the API server at /api/workflow and adds the view to
Airflow's nav and as a tab on DAG run pages.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from fuxictr_workflow.api import URL_PREFIX
from fuxictr_workflow.api.app import app


class FuxiCTRWorkflowPlugin(AirflowPlugin):
    name = "fuxictr_workflow"
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
