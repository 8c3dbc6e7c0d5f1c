"""The Airflow plugin: registered through the `airflow.plugins` entry point (setup.cfg)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class FuxiCTRWorkflowPlugin(AirflowPlugin):
    name = "fuxictr_workflow"
