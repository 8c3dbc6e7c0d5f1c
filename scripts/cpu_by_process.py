"""Where a test run's CPU time goes, by kind of process: samples /proc once a second and, when
stopped (SIGTERM / SIGINT), or every 30 s, writes each kind's CPU seconds (user + system) and
process count as JSON.

    python scripts/cpu_by_process.py OUT.json &    # then run the suite; kill %1 when it ends

A process is counted from its first sample to its last: one that lives less than a second
(an SSH poll's `job.py status`, a shell) is mostly missed, so the total is below the machine's
(compare /proc/stat's busy time over the same span). On a 2-core machine the suite keeps both
cores busy, so its wall time is about its CPU time over two: this says what to cut.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

TICK = os.sysconf("SC_CLK_TCK")
# first match wins: (kind, a word of the command line)
KINDS = (
    ("hive-thrift-server", "HiveThriftServer2"),
    ("beeline", "BeeLine"),
    ("java-other", "java"),
    ("transfer-agent", "The transfer agent"),
    ("sshd", "sshd"),
    ("airflow-task-process", "airflow worker --"),
    ("airflow-task-process", "airflow supervisor"),
    ("api-server", "api_server"),
    ("api-server", "api-server"),
    ("scheduler", "scheduler"),
    ("triggerer", "triggerer"),
    ("dag-processor", "dag-processor"),
    ("dag-processor", "dag processor"),
    ("celery-worker", "celery"),
    ("airflow-tasks-test", "tasks test"),
    ("airflow-dags-test", "dags test"),
    ("airflow-db-migrate", "db migrate"),
    ("airflow-other", "bin/airflow"),
    ("chromium", "chrom"),
    ("postgres", "postgres"),
    ("redis", "redis"),
    ("pytest", "pytest"),
)


def kind(argv: list[str]) -> str:
    if len(argv) > 1 and argv[1].endswith("runner.py"):
        return "runner"  # the runner's own process; its job supervisor names runner.py later on
    if len(argv) > 1 and argv[1].endswith("job.py"):
        return "runner-job-supervisor-or-poll"
    line = " ".join(argv)
    for name, word in KINDS:
        if word in line:
            return name
    return "other:" + os.path.basename(argv[0])[:30]


def sample(seen: dict[tuple[str, str], tuple[str, float]]) -> None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            cpu = (int(fields[11]) + int(fields[12])) / TICK
            key = (entry.name, fields[19])  # pid and start time: a reused pid is another process
            if key in seen:
                seen[key] = (seen[key][0], cpu)
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ValueError, IndexError):
            continue
        if argv and argv[0]:
            seen[key] = (kind(argv), cpu)


def write(seen: dict[tuple[str, str], tuple[str, float]], out: Path) -> None:
    cpu: dict[str, float] = {}
    count: dict[str, int] = {}
    for name, seconds in seen.values():
        cpu[name] = cpu.get(name, 0.0) + seconds
        count[name] = count.get(name, 0) + 1
    rows = [
        {"kind": k, "cpu_s": round(v, 1), "processes": count[k]}
        for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])
    ]
    out.write_text(json.dumps({"total_cpu_s": round(sum(cpu.values()), 1), "by_kind": rows}, indent=1))


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    seen: dict[tuple[str, str], tuple[str, float]] = {}

    def finish(signum: int, frame: FrameType | None) -> None:
        write(seen, out)
        sys.exit(0)

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    written = time.monotonic()
    while True:
        sample(seen)
        if time.monotonic() - written > 30:
            write(seen, out)
            written = time.monotonic()
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
