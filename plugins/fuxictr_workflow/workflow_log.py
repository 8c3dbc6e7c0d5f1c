"""The workflow logger: one call writes an event to the store (what the WebSocket streams)
and to the task's rotating log files ``<log_dir>/task_<id>/<YYYY-MM-DD_HH-MM-SS>.log``.

Several processes (Airflow task processes, the API server) may log for the same task, so
the file side takes an exclusive ``flock`` on the task directory's lock file around
choose-file-and-append; a line is never split across files, and a file passes the
rotation size only when a single line is bigger than the limit.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fuxictr_workflow.files.private_files import make_private_dir, open_private
from fuxictr_workflow.store import EpochRecord, WorkflowStore, iso, utcnow

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_FILE_TS = "%Y-%m-%d_%H-%M-%S"

_py_logger = logging.getLogger("fuxictr_workflow")


def format_line(task_id: int, step: str | None, level: str, message: str, ts: datetime) -> str:
    one_line = message.replace("\r", "").replace("\n", "\n    ")
    return f"{iso(ts)} [{level}] task_{task_id} {step or '-'}: {one_line}\n"


def _checked_level(level: str) -> str:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    return level


@dataclass
class WorkflowLogger:
    store: WorkflowStore
    log_dir: str
    rotation_size: int

    def log(self, task_id: int, step: str | None, level: str, message: str) -> int:
        """Record one event; returns its id in task_logs."""
        level = _checked_level(level.upper())
        ts = utcnow()
        event_id = self.store.append_log(task_id, step, level, message, ts)
        self._mirror(task_id, step, level, message, ts)
        return event_id

    def log_job_lines(
        self,
        task_id: int,
        step: str,
        job_key: str,
        start: int,
        end: int,
        lines: list[tuple[str, str]],
        epochs: Sequence[EpochRecord] = (),
    ) -> bool:
        """Record the (level, message) lines and the epochs taken from bytes start..end of a
        job's log, exactly once (see WorkflowStore.append_job_lines); False when another
        follower already did. The files follow the store: a process killed in between leaves
        these lines out of the files."""
        for level, _ in lines:
            _checked_level(level)
        ts = self.store.append_job_lines(task_id, step, job_key, start, end, lines, epochs)
        if ts is None:
            return False
        for level, message in lines:
            self._mirror(task_id, step, level, message, ts)
        return True

    def _mirror(self, task_id: int, step: str | None, level: str, message: str, ts: datetime) -> None:
        """After the store: the task's log files and Python's logging."""
        self._append_file(task_id, format_line(task_id, step, level, message, ts), ts)
        _py_logger.log(getattr(logging, level), "[task %s %s] %s", task_id, step or "-", message)

    def info(self, task_id: int, step: str | None, message: str) -> int:
        return self.log(task_id, step, "INFO", message)

    def warning(self, task_id: int, step: str | None, message: str) -> int:
        return self.log(task_id, step, "WARNING", message)

    def error(self, task_id: int, step: str | None, message: str) -> int:
        return self.log(task_id, step, "ERROR", message)

    def task_dir(self, task_id: int) -> Path:
        return Path(self.log_dir) / f"task_{task_id}"

    def _append_file(self, task_id: int, line: str, ts: datetime) -> None:
        directory = self.task_dir(task_id)
        if not directory.is_dir():
            make_private_dir(directory)
        data = line.encode()
        with os.fdopen(open_private(directory / ".lock", os.O_WRONLY | os.O_APPEND), "ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self._current_file(directory, len(data), ts)
            with os.fdopen(open_private(path, os.O_WRONLY | os.O_APPEND), "ab") as f:
                f.write(data)

    def _current_file(self, directory: Path, incoming: int, ts: datetime) -> Path:
        """The newest file if the line fits, else a new file named for the time (unique)."""
        files = sorted(directory.glob("*.log"))
        if files:
            newest = files[-1]
            size = newest.stat().st_size
            if size == 0 or size + incoming <= self.rotation_size:
                return newest
        base = ts.strftime(_FILE_TS)
        candidate = directory / f"{base}.log"
        n = 0
        while candidate.exists() or (files and candidate.name <= files[-1].name):
            n += 1
            candidate = directory / f"{base}_{n:04d}.log"
        return candidate


def get_logger(config_path: str | os.PathLike[str] | None = None) -> WorkflowLogger:
    """The logger for the active config (store URL, log_dir, rotation size)."""
    from fuxictr_workflow.domain.config import get_config, load_config
    from fuxictr_workflow.store import get_store

    cfg = load_config(config_path) if config_path else get_config()
    return WorkflowLogger(get_store(cfg.store.url), cfg.storage.log_dir, cfg.task.log_rotation_size)
