"""The `stress` marker: tests only `make test-stress` runs (`pytest -m stress`).

A plain `pytest tests` deselects every test marked `stress`. They run when `-m` names the
marker (`-m stress`, `-m "stress or slow"`), when FXW_STRESS=1 is set (then beside the rest
of the suite), or when a test's full id is given on the command line
(`tests/test_services_restart.py::test_sshd_restarts_and_serves_every_time[stress-20]`).

The stand-in servers' restart tests run in both modes with the same checks per restart;
`RESTART_MODES` parametrizes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

MARK = "stress"
ENV = "FXW_STRESS"


@dataclass(frozen=True)
class RestartMode:
    restarts: int
    # stress: other processes keep every CPU busy meanwhile (a fresh CI machine is slower and
    # busier than a quiet one); for Hive, the loop also runs beside the rest of the suite
    busy: bool


DEFAULT = RestartMode(restarts=3, busy=False)
STRESS = RestartMode(restarts=20, busy=True)

# the timeouts go here, not on the tests: a test's own timeout mark would win over its param's
RESTART_MODES = [
    pytest.param(DEFAULT, id=str(DEFAULT.restarts), marks=pytest.mark.timeout(600)),
    pytest.param(
        STRESS, id=f"stress-{STRESS.restarts}", marks=[pytest.mark.stress, pytest.mark.timeout(2700)]
    ),
]


def stress_requested(config: pytest.Config) -> bool:
    """-m names the marker (pytest's own -m then selects) or FXW_STRESS=1 keeps them all."""
    return MARK in (config.getoption("markexpr") or "") or os.environ.get(ENV, "") not in ("", "0")


def _named(config: pytest.Config, item: pytest.Item) -> bool:
    """The item's full id, parameters included, was given on the command line."""
    return any(arg.endswith(f"::{item.name}") for arg in config.args)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if stress_requested(config):
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker(MARK) and not _named(config, item) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
