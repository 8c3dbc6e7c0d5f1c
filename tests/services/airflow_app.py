"""A real Airflow api-server (with our plugin mounted) on 127.0.0.1 for API and UI tests.

Own AIRFLOW_HOME and port, SimpleAuthManager users `admin` (admin) and `viewer` (viewer:
no trigger rights), the stand-in DAG from tests/fixtures/api_dags serialized into the
metadata DB, a workflow store of its own. No scheduler: runs are created, not executed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fuxictr_workflow.store import WorkflowStore
from scripts import airflow_stack, demo

API_DAGS = Path(__file__).resolve().parents[1] / "fixtures" / "api_dags"


@dataclass
class ApiServer:
    base_url: str
    port: int
    home: Path
    store: WorkflowStore
    env: dict[str, str]

    def password(self, user: str) -> str:
        return json.loads(airflow_stack.passwords_file(self.home).read_text())[user]

    def token(self, user: str = airflow_stack.ADMIN) -> str:
        body = json.dumps({"username": user, "password": self.password(user)}).encode()
        req = urllib.request.Request(
            f"{self.base_url}/auth/token", body, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())["access_token"]

    def airflow(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
        """Airflow's own REST API, /api/v2/dags/<path>, with `token` (a new admin one by default)."""
        return demo.api(self.port, token or self.token(), method, f"/api/v2/dags/{path}", body)


def check_processes(api: ApiServer) -> set[int]:
    """The API server's field-check processes (api/field_checks.py): the forkserver's children."""
    procs: dict[int, tuple[int, bool]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = Path(entry.path, "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            procs[int(entry.name)] = (ppid, b"forkserver" in cmdline)
    ours, todo = set(), [airflow_stack.running(api.home)["api-server"]]
    while todo:
        pid = todo.pop()
        ours.add(pid)
        todo += [child for child, (ppid, _) in procs.items() if ppid == pid and child not in ours]
    forkserver = {p for p in ours if procs.get(p, (0, False))[1]}
    return {p for p in forkserver if procs[p][0] in forkserver}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api_server(
    root: Path, config_extra: dict[str, Any] | None = None, env_extra: dict[str, str] | None = None
) -> ApiServer:
    home = root / "airflow"
    config: dict[str, Any] = {
        "servers": {
            "local": {
                "host": "127.0.0.1",
                "port": 22,
                "username": "nobody",
                "remote_root": str(root / "remote"),
            }
        },
        "storage": {
            "staging_dir": str(root / "staging"),
            "log_dir": str(root / "logs" / "workflow"),
        },
        "task": {"heartbeat_interval": 5},
        "store": {"url": f"sqlite:///{root / 'workflow.db'}"},
        **(config_extra or {}),
    }
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    extra_env = {
        "FUXICTR_WORKFLOW_CONFIG": str(config_path),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(API_DAGS),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        **(env_extra or {}),
    }
    port = free_port()
    store = WorkflowStore(config["store"]["url"], create=True)
    env = airflow_stack.start(home, port, extra_env, processes=())  # metadata DB only
    subprocess.run(
        [str(airflow_stack.VENV_BIN / "airflow"), "dags", "reserialize"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    airflow_stack.start_one(home, "api-server", env)
    try:
        airflow_stack.wait_healthy(port)
    except BaseException:
        airflow_stack.stop(home)
        raise
    return ApiServer(f"http://127.0.0.1:{port}", port, home, store, env)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = start_api_server(tmp_path_factory.mktemp("api_server"))
    try:
        yield server
    finally:
        airflow_stack.stop(server.home)
        server.store.dispose()
