"""The CeleryExecutor stack for this package (`make serve EXECUTOR=celery`): PostgreSQL,
Redis, the api-server, scheduler, dag-processor, triggerer and two Celery workers, with
sshd, Hive and FuXiCTR as in the local stack. It replaces tests/e2e's `stack` here; the
parent's autouse `healed` brings back whatever a test stopped, workers included."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts.hive_server import HiveServer
from tests.e2e.stack import Stack, running_stack


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory, hive_server: HiveServer) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("e2e-celery"), "celery", hive_server) as started:
        yield started
