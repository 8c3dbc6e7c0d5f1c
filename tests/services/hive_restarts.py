"""The background Hive restart loop (restart_loop.py) for the test session: started with the
session when the stress variant of the restart test is selected (`-m stress`, see stress.py),
so it runs beside the other tests; the test waits for its report. The default variant runs
its few restarts in the foreground and needs none of this."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripts.processes import ProcessRef
from tests.services.restart_loop import read_report
from tests.services.stress import MARK, STRESS

RESTART_TEST = "test_hive_restarts_and_answers_every_time"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class BackgroundRestarts:
    proc: subprocess.Popen[bytes]
    report: Path

    def rows(self) -> list[dict[str, Any]]:
        return read_report(self.report)

    def wait(self, timeout: float) -> list[dict[str, Any]]:
        """The report once the loop has ended (or failed), or as far as it got by `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.rows()
            if rows and ("done" in rows[-1] or "error" in rows[-1]):
                return rows
            if self.proc.poll() is not None:
                return [*self.rows(), {"error": f"the restart loop exited with {self.proc.returncode}"}]
            time.sleep(2)
        return [*self.rows(), {"error": f"the restart loop did not finish in {timeout:.0f}s"}]

    def stop(self) -> None:
        ProcessRef.of(self.proc.pid).stop(signal.SIGTERM)


@pytest.fixture(scope="session", autouse=True)
def hive_restarts(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackgroundRestarts | None]:
    if not any(
        item.name.startswith(RESTART_TEST) and item.get_closest_marker(MARK) for item in request.session.items
    ):
        yield None
        return
    work = tmp_path_factory.mktemp("hive_restarts")
    report = work / "report.jsonl"
    log = open(work / "loop.log", "ab")  # noqa: SIM115 - handed to the child
    argv = [sys.executable, "-m", "tests.services.restart_loop", str(work / "hive"), str(STRESS.restarts)]
    proc = subprocess.Popen(
        [*argv, str(report)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    background = BackgroundRestarts(proc, report)
    try:
        yield background
    finally:
        background.stop()
        log.close()
