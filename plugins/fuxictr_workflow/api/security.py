"""Auth for the plugin's routes: Airflow does not authenticate plugin apps itself.

Every route resolves the caller with Airflow's own ``get_user`` (a Bearer token wins over
the UI's ``_token`` cookie) and asks the auth manager about the DAG the request acts on:
the DAG of the task's training server (one DAG per server, see dag_params.dag_id_for).
Reading needs DAG-run read access on that DAG, creating/retrying needs DAG-run create,
cancelling needs DAG-run edit. Listing shows only tasks of DAGs the caller may read, so a
viewer of one server's DAG never sees another server's tasks (or their SQL).

The WebSocket checks the same token by hand (cookie or ``token`` query parameter), and the
same read right on the task's DAG.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, HTTPException, Request, WebSocket, status

from fuxictr_workflow.domain.config import get_config
from fuxictr_workflow.orchestration.dag_params import dag_id_for

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

COOKIE = "_token"

Method = Literal["GET", "POST", "PUT"]
VERBS: dict[str, str] = {"GET": "read", "POST": "run", "PUT": "edit runs of"}


def server_dag_id(server: str | None) -> str:
    """The DAG a task of `server` runs in (a task without a server belongs to the default one)."""
    cfg = get_config()
    assert cfg.default_server is not None
    return dag_id_for(server or cfg.default_server, cfg.default_server)


def is_authorized(user: BaseUser, method: Method, dag_id: str) -> bool:
    """The auth manager's answer for DAG-run access on `dag_id` (with its team, if any)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.models.dag import DagModel

    return bool(
        get_auth_manager().is_authorized_dag(
            method=method,
            access_entity=DagAccessEntity.RUN,
            details=DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id)),
            user=user,
        )
    )


def require(user: BaseUser, method: Method, server: str | None) -> None:
    """403 unless `user` has `method` rights on the DAG of `server`."""
    dag_id = server_dag_id(server)
    if not is_authorized(user, method, dag_id):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"you may not {VERBS[method]} DAG {dag_id} (server {server!r})"
        )


def require_any(user: BaseUser, method: Method, servers: Iterable[str]) -> None:
    """403 unless `user` has `method` rights on the DAG of at least one of `servers`.

    The refusal names nothing: a caller with no rights at all learns no server or DAG."""
    if not any(is_authorized(user, method, server_dag_id(s)) for s in servers):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"you may not {VERBS[method]} any workflow DAG")


def servers_with(user: BaseUser, method: Method, servers: Iterable[str]) -> list[str]:
    """The servers among `servers` on whose DAG `user` has `method` rights, in order."""
    return [s for s in servers if is_authorized(user, method, server_dag_id(s))]


def readable_servers(user: BaseUser, servers: Iterable[str]) -> set[str]:
    """The servers among `servers` whose DAG `user` may read."""
    return {s for s in servers if is_authorized(user, "GET", server_dag_id(s))}


def readable_task_servers(user: BaseUser, task_servers: Iterable[str]) -> tuple[set[str], bool]:
    """Which tasks a listing shows `user`: the servers (configured, or named by `task_servers`,
    the servers tasks were created for) whose DAG it may read, and whether that includes tasks
    without a server (they belong to the default server's DAG)."""
    cfg = get_config()
    servers = readable_servers(user, {*cfg.servers, *task_servers})
    return servers, cfg.default_server in servers


def user_name(user: BaseUser) -> str:
    return str(user.get_name())


async def websocket_user(websocket: WebSocket) -> tuple[BaseUser, dict[str, Any]] | None:
    """The Airflow user of a WebSocket handshake and its token's claims, or None (invalid).

    The claims are read after the auth manager validated the token, for its expiry."""
    import jwt
    from airflow.api_fastapi.app import get_auth_manager

    token = websocket.query_params.get("token") or websocket.cookies.get(COOKIE)
    if not token:
        return None
    try:
        user = await get_auth_manager().get_user_from_token(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except Exception:
        return None
    return user, claims


async def current_user(request: Request) -> BaseUser:
    """Route dependency: the caller, resolved by Airflow's own ``get_user`` (401/403 else).

    Imported lazily: this module is loaded wherever the plugin is (scheduler, workers)."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    return await get_user(request, None, await bearer_scheme(request))


# BaseUser only at type-check time (see current_user); FastAPI resolves the dependency.
CurrentUser = Annotated[Any, Depends(current_user)]
