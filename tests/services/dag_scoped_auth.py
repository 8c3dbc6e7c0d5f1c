"""An auth manager for the security tests only: SimpleAuthManager plus per-DAG scopes.

SimpleAuthManager grants a role's rights on every DAG (its only finer unit is a team, which
needs multi-team mode and DAG bundles per team). Deployments get per-DAG rights from their
auth manager (FAB's per-DAG permissions, Keycloak resources, ...); to test that the plugin
asks the auth manager about the right DAG, this subclass lets the users named in
``$FUXICTR_TEST_DAG_SCOPES`` (``user=dag_a|dag_b;user2=dag_c``) use their role on those DAGs
and no other. Other users keep SimpleAuthManager's behaviour. Configured in the test stack
with ``[core] auth_manager``; never shipped.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

SCOPES_ENV = "FUXICTR_TEST_DAG_SCOPES"


def scopes() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for entry in filter(None, os.environ.get(SCOPES_ENV, "").split(";")):
        user, _, dags = entry.partition("=")
        found[user.strip()] = {d.strip() for d in dags.split("|") if d.strip()}
    return found


class DagScopedAuthManager(SimpleAuthManager):
    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        allowed = scopes().get(user.get_name())
        if allowed is not None and (details is None or details.id not in allowed):
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
