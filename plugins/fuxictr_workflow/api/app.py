"""The plugin's FastAPI app, mounted by Airflow's API server at /api/workflow.

No interactive docs (/docs, /redoc): they would be pages outside the API's auth. The schema
is served at /openapi.json to callers who may read at least one server's DAG; Airflow's own
API docs are separate. :class:`guards.RequestGuard` runs before every route.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, status

from fuxictr_workflow.api import experiments, field_checks, gate, guards, logs_ws, security, tasks, ui
from fuxictr_workflow.domain.config import get_config


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """Run by Airflow's API server for the mounted app (not by the other processes that import
    the plugin): the field-check processes live as long as the server."""
    field_checks.PROCESSES.start()
    try:
        yield
    finally:
        field_checks.PROCESSES.stop()


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=lifespan,
        title="FuXiCTR Workflow API",
        description="Create and follow FuXiCTR pipeline tasks (Hive → training server → Hive).",
        version="1.0",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(tasks.router)
    app.include_router(gate.router)
    app.include_router(experiments.router)
    app.include_router(logs_ws.router)
    app.include_router(ui.router)
    app.add_middleware(guards.RequestGuard)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(user: security.CurrentUser) -> dict[str, Any]:
        if not security.readable_servers(user, get_config().servers):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "you may not read any workflow DAG")
        return app.openapi()

    return app


app = create_app()
