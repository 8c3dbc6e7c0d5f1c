"""A stand-in server run in the foreground as the leader of its own process group, with its
state (port, pid, pid start time) in `<dir>/server.json`: start, wait until it answers, stop.

PostgreSQL and Redis for the Celery stack are built on it (postgres_server.py,
redis_server.py); each says how to start, how to check that it answers and how it wants to
be stopped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scripts import processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class DaemonInfo:
    port: int
    pid: int
    start_ticks: int

    @property
    def process(self) -> processes.ProcessRef:
        return processes.ProcessRef(self.pid, self.start_ticks)


class Daemon:
    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, directory: str | os.PathLike[str], port: int | None = None) -> None:
        self.dir = Path(directory).resolve()
        self.port = port
        self.info_file = self.dir / "server.json"
        self.log_path = self.dir / "server.log"

    # -- what each server says --

    def prepare(self, port: int) -> None:
        """One-time set-up before the first start (a data dir, a config file)."""

    def command(self, port: int) -> list[str]:
        raise NotImplementedError

    def popen_kwargs(self) -> dict[str, Any]:
        return {}

    def answers(self, port: int) -> bool:
        raise NotImplementedError

    # -- the shared life cycle --

    def read_info(self) -> DaemonInfo | None:
        return DaemonInfo(**json.loads(self.info_file.read_text())) if self.info_file.exists() else None

    def running(self) -> DaemonInfo | None:
        info = self.read_info()
        return info if info is not None and info.process.running() else None

    def serving(self) -> bool:
        info = self.running()
        return info is not None and self.answers(info.port)

    def start(self, timeout: float = 120.0) -> DaemonInfo:
        current = self.running()
        if current is not None:
            return current
        self.stop()
        previous = self.read_info()
        port = self.port or (previous.port if previous else None) or free_port()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prepare(port)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the daemon
        kwargs = {"cwd": self.dir, **self.popen_kwargs()}
        proc = subprocess.Popen(
            self.command(port), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, **kwargs,
        )  # fmt: skip
        info = DaemonInfo(port, proc.pid, processes.ProcessRef.of(proc.pid).start_ticks)
        self.info_file.write_text(json.dumps(asdict(info)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {proc.returncode}:\n{self.tail()}")
            if self.answers(port):
                return info
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not answer on 127.0.0.1:{port} in {timeout:.0f}s:\n{self.tail()}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        info = self.read_info()
        if info is not None:
            info.process.stop(self.stop_signal, timeout)

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else "(no log)"
