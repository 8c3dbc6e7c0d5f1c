"""The one Airflow api-server the tests/security modules (and tests/test_api_metrics.py) share
(fixture `security_api`, tests/services/security_api.py), and a client for it.

An api-server start (metadata DB, DAG serialization, the server itself) is the costliest
setup of the package, so its modules share one, configured for all of them: two training
servers (two DAGs), a per-DAG-scoped auth manager with five users, short CLI tokens, a
WebSocket cap, one Hive output database and an HDFS allowlist. Each module's own
documentation says which part it relies on.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from scripts.hive_server import HiveInfo
from tests.services.airflow_app import ApiServer, start_api_server
from tests.services.hive import hive_config

REPO = Path(__file__).resolve().parents[2]
MAIN, OTHER = "fuxictr_workflow", "fuxictr_workflow__gpu2"
CLI_TOKEN_S = 6  # lifetime of /auth/token/cli tokens in this stack: the expiry test waits for it
WS_CAP = 2
# The one Hive database tasks may write to (test_sql_and_paths creates it on the real server).
DB = "t_sec"
# Where hdfs_path may point besides the test root: webhdfs on 127.0.0.1:9870, paths under /data.
ALLOWED_URL = "webhdfs://127.0.0.1:9870"
ALLOWED_PREFIX = "/data"


def start_security_api(root: Path, hive: HiveInfo, test_root: Path) -> ApiServer:
    """The real API server, configured as a deployment would be: two training servers, one
    output database, one allowed webhdfs origin (127.0.0.1), hdfs paths under /data or
    `test_root` only, and the users and DAG scopes described in test_api_surface."""
    server = {"host": "127.0.0.1", "port": 22, "username": "nobody"}
    config = {
        "servers": {
            "local": {**server, "remote_root": str(root / "remote")},
            "gpu2": {**server, "remote_root": str(root / "remote2")},
        },
        "api": {"max_websockets_per_user": WS_CAP},
        "hive": hive_config(hive, DB),
        "hdfs": {"allowed_urls": [ALLOWED_URL], "allowed_path_prefixes": [ALLOWED_PREFIX, str(test_root)]},
    }
    env = {
        "AIRFLOW__CORE__AUTH_MANAGER": "tests.services.dag_scoped_auth.DagScopedAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": (
            "admin:admin,viewer:viewer,alice:user,bob:user,vera:viewer"
        ),
        "FUXICTR_TEST_DAG_SCOPES": f"alice={MAIN};bob={OTHER};vera={MAIN}",
        "AIRFLOW__API_AUTH__JWT_CLI_EXPIRATION_TIME": str(CLI_TOKEN_S),
        "AIRFLOW__API_AUTH__JWT_LEEWAY": "0",
        # the auth manager is imported from tests/; a caller's PYTHONPATH (a checkout's plugins/
        # ahead of another's editable install) is kept
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    return start_api_server(root, config, env)


_tokens: dict[tuple[int, str], str] = {}


def token(api: ApiServer, user: str) -> str:
    """A web token of `user`, fetched once per server and user."""
    key = (api.port, user)
    if key not in _tokens:
        _tokens[key] = api.token(user)
    return _tokens[key]


def call(
    api: ApiServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    user: str | None = "admin",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    sent = {"Content-Type": "application/json", **(headers or {})}
    if user:
        sent["Authorization"] = f"Bearer {token(api, user)}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"{api.base_url}/api/workflow{path}", data, sent, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        text = err.read()
        try:
            return err.code, json.loads(text or b"null")
        except json.JSONDecodeError:
            return err.code, text.decode(errors="replace")
