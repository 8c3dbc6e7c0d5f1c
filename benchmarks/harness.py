"""What both FuXiCTR benchmarks share: the runner's train/valid split written out for the stock
flow, and child processes measured for wall time and peak RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
REMOTE = ROOT / "plugins" / "fuxictr_workflow" / "remote"
RUNNER = REMOTE / "runner.py"
DEMO = ROOT / "plugins" / "fuxictr_workflow" / "demo"
STOCK_FLOW = Path(__file__).resolve().parent / "stock_flow.py"
SEED, VALID_FRACTION = 2024, 0.2


def write_stock_split(table: pa.Table, directory: Path, seed: int = SEED) -> tuple[Path, Path]:
    """The rows the runner trains and validates on (its own split function), as two files."""
    sys.path.insert(0, str(REMOTE))
    from streaming import valid_mask

    is_valid = pa.array(valid_mask(0, table.num_rows, seed, VALID_FRACTION))
    directory.mkdir(parents=True, exist_ok=True)
    train, valid = directory / "train.parquet", directory / "valid.parquet"
    pq.write_table(table.filter(pc.invert(is_valid)), train)
    pq.write_table(table.filter(is_valid), valid)
    return train, valid


class ChildFailed(RuntimeError):
    def __init__(self, cmd: list[str], output: str) -> None:
        super().__init__(output)
        self.cmd, self.output = cmd, output

    def reason(self) -> str:
        """The child's own error: its JSON error line, else the last traceback line."""
        lines = [ln for ln in self.output.splitlines() if ln.strip()]
        for line in reversed(lines):
            if line.startswith('{"event": "error"'):
                return str(json.loads(line)["error"])[:500]
        errors = [
            ln for ln in lines if ln and not ln.startswith(" ") and ("Error" in ln or "Exception" in ln)
        ]
        return (errors[-1] if errors else (lines[-1] if lines else "no output"))[:500]


def run_child(cmd: list[str], timeout: float | None = None) -> tuple[float, dict[str, Any], float]:
    """Wall seconds, the child's last JSON metrics line, and its peak RSS in MB (wait4)."""
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline = None if timeout is None else start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.monotonic() > deadline:
                os.killpg(proc.pid, 9)
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - start
        out.seek(0)
        output = out.read()
    metrics = [json.loads(ln) for ln in output.splitlines() if ln.startswith('{"event": "metrics"')]
    if proc.returncode != 0 or not metrics:
        raise ChildFailed(cmd, output[-6000:])
    return wall, metrics[-1], usage.ru_maxrss / 1024
