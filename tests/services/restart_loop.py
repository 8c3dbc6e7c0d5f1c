"""Stop and start one stand-in Hive server again and again, writing a report.

    python -m tests.services.restart_loop DIR RESTARTS REPORT

After every start the server must answer a query, and nothing of the stopped server may be
left (not running, no zombie, no member of its process group). One JSON line per restart goes
to REPORT; a last line {"done": true} ends it.

The default suite calls `run` in the foreground of its test with a few restarts and quiet
CPUs. The stress variant (`make test-stress`) runs it as above, in the background of the
suite (tests/services/hive_restarts.py), with 20 restarts and one spinner per CPU at niceness
10 for the whole loop, so the CPUs stay busy even when nothing else runs; in the full suite
the other tests' Airflow, Hive, sshd and FuXiCTR processes compete too, at full priority.
A JVM start takes 20-50 s on two busy CPUs: twenty of them in a row, in the foreground,
would be a third of the suite's time budget, hence the background.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scripts.hive_server import HiveServer
from scripts.processes import ProcessRef

SPIN_NICENESS = 10


def spinners(niceness: int = SPIN_NICENESS) -> list[subprocess.Popen[bytes]]:
    """One busy-looping process per CPU at that niceness."""
    return [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            start_new_session=True,
            preexec_fn=lambda: os.nice(niceness),
        )
        for _ in range(os.cpu_count() or 2)
    ]


def same_process(process: ProcessRef) -> bool:
    """The pid in /proc is still the very process (zombie or not) that `process` names."""
    try:
        stat = Path(f"/proc/{process.pid}/stat").read_text()
    except OSError:
        return False
    return int(stat.rsplit(")", 1)[1].split()[19]) == process.start_ticks


def gone(process: ProcessRef) -> bool:
    """Nothing of a stopped server is left: not running, not a zombie, no group member."""
    return not process.group_running() and not same_process(process)


def answer(port: int, i: int) -> Any:
    from pyhive import hive

    conn = hive.connect(host="127.0.0.1", port=port, username="hive")
    try:
        cursor = conn.cursor()
        cursor.execute(f"SELECT {int(i)} + 1")
        return cursor.fetchall()[0][0]
    finally:
        conn.close()


def read_report(report: Path) -> list[dict[str, Any]]:
    if not report.exists():
        return []
    return [json.loads(line) for line in report.read_text().splitlines() if line.strip()]


def run(directory: Path, restarts: int, report: Path, busy: bool = True) -> None:
    """`restarts` restarts of one server, reported to `report`; `busy`: spinners meanwhile."""
    server = HiveServer(directory)
    spin = spinners() if busy else []
    try:
        with report.open("a") as out:
            try:
                info = server.start()
                for i in range(restarts):
                    started = time.monotonic()
                    server.stop()
                    stopped = server.running() is None and not server.serving()
                    old_gone = gone(info.process)
                    info = server.start()
                    row = {
                        "i": i,
                        "stopped": stopped,
                        "old_gone": old_gone,
                        "answered": answer(info.port, i),
                        "seconds": round(time.monotonic() - started, 1),
                    }
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                server.stop()
                out.write(json.dumps({"done": True, "last_gone": gone(info.process)}) + "\n")
            except Exception as err:  # the report says what broke; the test fails on it
                out.write(json.dumps({"error": f"{type(err).__name__}: {err}"}) + "\n")
    finally:
        server.stop()
        for proc in spin:
            ProcessRef.of(proc.pid).stop(signal.SIGKILL)


if __name__ == "__main__":
    # stopped by the session's end (SIGTERM): the server and the spinners go too
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    run(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
