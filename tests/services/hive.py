"""The embedded HiveServer2 (Spark Thrift Server) for the test session: started once via
scripts/hive_server.py, with Airflow connections and beeline on PATH set in os.environ."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.hive_server import HiveInfo, HiveServer


@pytest.fixture(scope="session")
def hive_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HiveServer]:
    server = HiveServer(tmp_path_factory.mktemp("hive"))
    server.start()
    old = {k: os.environ.get(k) for k in server.airflow_env()}
    os.environ.update(server.airflow_env())
    try:
        yield server
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def hive(hive_server: HiveServer) -> HiveInfo:
    info = hive_server.running()
    assert info is not None
    return info


def hive_config(hive: HiveInfo, *databases: str) -> dict[str, Any]:
    """config.yaml's hive section for this server: Spark dialect, its warehouse, the given databases."""
    return {
        "output_databases": list(databases),
        "warehouse_dir": str(Path(hive.dir) / "warehouse"),
        "sql_dialect": "spark",
    }


def hive_query(sql: str) -> list[tuple]:
    """One statement through HiveServer2 (PyHive), as the demo counts rows."""
    from airflow.providers.apache.hive.hooks.hive import HiveServer2Hook

    hook = HiveServer2Hook()
    if sql.lstrip().upper().startswith(("SELECT", "SHOW")):
        return hook.get_records(sql)
    hook.run(sql)
    return []


def submitted_queries(server: HiveServer) -> list[str]:
    """Every statement the server received, from its log (the Thrift Server logs each one)."""
    import re

    log = (server.dir / "server.log").read_text(errors="replace")
    return re.findall(r"Submitting query '(.*?)' with [0-9a-f-]{36}", log, re.DOTALL)
