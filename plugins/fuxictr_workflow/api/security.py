"""Auth for the plugin's routes: Airflow does not authenticate plugin apps itself.

HTTP routes use Airflow's own security dependencies (Bearer token or the UI's `_token`
cookie) with DAG permissions on the workflow DAG: reading needs DAG-run read access,
creating/retrying/cancelling needs DAG-run create/edit. The WebSocket checks the token by
hand (cookie or `token` query parameter).
"""

from __future__ import annotations

from fastapi import Depends, WebSocket

from fuxictr_workflow.dag_params import DAG_ID

COOKIE = "_token"


def _dag_access(method: str) -> object:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return Depends(requires_access_dag(method, DagAccessEntity.RUN, param_dag_id=DAG_ID))  # type: ignore[arg-type]


def can_read() -> object:
    return _dag_access("GET")


def can_trigger() -> object:
    return _dag_access("POST")


def can_edit() -> object:
    return _dag_access("PUT")


async def websocket_user(websocket: WebSocket) -> object | None:
    """The Airflow user of a WebSocket handshake, or None (caller closes with 1008)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    token = websocket.query_params.get("token") or websocket.cookies.get(COOKIE)
    if not token:
        return None
    manager = get_auth_manager()
    try:
        user = await manager.get_user_from_token(token)
    except Exception:
        return None
    allowed = manager.is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=DAG_ID), user=user
    )
    return user if allowed else None
