"""One stack for the package: started before its first test, stopped after its last, healed
before every test (a fault test stops services; one failure must not fail the tests after it).
tests/e2e/celery overrides `stack` with the CeleryExecutor stack."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts.hive_server import HiveServer
from tests.e2e.launch import Launched, launch
from tests.e2e.stack import Stack, running_stack


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory, hive_server: HiveServer) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("e2e"), "local", hive_server) as started:
        yield started


@pytest.fixture(autouse=True)
def healed(stack: Stack) -> None:
    """Every service a test needs is up before it starts, whatever the test before it stopped
    or broke, so one failing fault test cannot fail the tests after it."""
    restarted = stack.services.heal()
    if restarted:
        print(f"restarted before this test: {', '.join(restarted)}")


@pytest.fixture(scope="package")
def launched(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    """The fault-free runs of the package, started together before its first test checks one;
    waited for (stopped past a bound) after its last test, whichever modules ran."""
    started = launch(stack, tmp_path_factory.mktemp("dags_test"))
    yield started
    started.stop()
