"""The api-server configured as a deployment would be (tests/security/stack.py), started once
for the session: the tests/security modules and tests/test_api_metrics.py share it. An
api-server start (metadata DB, DAG serialization, the server) is the costliest setup of the
stack tier; the tests that share this one keep to their own tasks (their own experiment ids,
names and runs), so none sees another's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts import airflow_stack
from scripts.hive_server import HiveInfo
from tests.services.airflow_app import ApiServer


@pytest.fixture(scope="session")
def security_api(tmp_path_factory: pytest.TempPathFactory, hive: HiveInfo) -> Iterator[ApiServer]:
    from tests.security.stack import start_security_api

    root = tmp_path_factory.mktemp("security_api")
    api = start_security_api(root, hive, tmp_path_factory.getbasetemp())
    try:
        yield api
    finally:
        airflow_stack.stop(api.home)
        api.store.dispose()
