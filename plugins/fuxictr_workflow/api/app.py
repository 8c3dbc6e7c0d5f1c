"""The plugin's FastAPI app, mounted by Airflow's API server at /api/workflow."""

from __future__ import annotations

from fastapi import FastAPI

from fuxictr_workflow.api import logs_ws, tasks, ui


def create_app() -> FastAPI:
    app = FastAPI(
        title="FuXiCTR Workflow API",
        description="Create and follow FuXiCTR pipeline tasks (Hive → training server → Hive).",
        version="1.0",
    )
    app.include_router(tasks.router)
    app.include_router(logs_ws.router)
    app.include_router(ui.router)
    return app


app = create_app()
