"""The api-server shared by the tests/security modules (see stack.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts import airflow_stack
from scripts.hive_server import HiveInfo
from tests.security.stack import start_security_api
from tests.services.airflow_app import ApiServer


@pytest.fixture(scope="package")
def security_api(tmp_path_factory: pytest.TempPathFactory, hive: HiveInfo) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("security_api")
    api = start_security_api(root, hive, tmp_path_factory.getbasetemp())
    try:
        yield api
    finally:
        airflow_stack.stop(api.home)
        api.store.dispose()
