"""Which stand-in server process is ours, whether it runs, and stopping it for good.

Every stand-in server (sshd, the Spark Thrift Server, Airflow's processes) is started as the
leader of its own process group (start_new_session) and remembered as a `ProcessRef`: its pid
plus the kernel's start time of that pid. A pid alone can lie twice over: a stopped leader
that nobody reaped stays in the process table as a zombie (kill(pid, 0) still succeeds), and
a freed pid is handed to an unrelated process later. The start time tells both apart, and a
zombie is never "running".
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

POLL_S = 0.05
EXITED = ("Z", "X")  # zombie (exited, not yet reaped) and dead
# After SIGKILL the kernel tears a group down in milliseconds; this only bounds a wait on a
# process stuck in uninterruptible sleep (e.g. on a dead NFS mount).
KILL_GRACE_S = 10.0


@dataclass(frozen=True)
class _Stat:
    exited: bool
    pgrp: int
    start_ticks: int


def _fields(path: str) -> list[str] | None:
    """The fields of a /proc stat file after the command name (which may hold spaces and ')')."""
    try:
        return Path(path).read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _stat(pid: int) -> _Stat | None:
    fields = _fields(f"/proc/{pid}/stat")
    if fields is None:
        return None
    return _Stat(exited=_exited(pid, fields[0]), pgrp=int(fields[2]), start_ticks=int(fields[19]))


def _exited(pid: int, leader_state: str) -> bool:
    """A leader shows as a zombie as soon as its main thread ends, while the process's other
    threads may still run (a JVM running its shutdown hooks, its port still bound): the process
    has exited only when every thread has."""
    if leader_state not in EXITED:
        return False
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    return all((f := _fields(f"/proc/{pid}/task/{tid}/stat")) is None or f[0] in EXITED for tid in tids)


@dataclass(frozen=True)
class ProcessRef:
    """One process as started: the pid and its start time (clock ticks since boot)."""

    pid: int
    start_ticks: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        """The process now holding `pid` (call right after starting it)."""
        stat = _stat(pid)
        if stat is None:
            raise ProcessLookupError(f"no process {pid}")
        return cls(pid, stat.start_ticks)

    def running(self) -> bool:
        """Our process exists and has not exited (a zombie or a reused pid is not running)."""
        stat = _stat(self.pid)
        return stat is not None and stat.start_ticks == self.start_ticks and not stat.exited

    def group_running(self) -> bool:
        """The leader, or any process still in its group, has not exited."""
        stat = _stat(self.pid)
        if stat is not None and stat.start_ticks != self.start_ticks:
            # the pid is another process's now; the kernel does not hand out a pid that is still
            # some live process's pgid, so nothing of our group is left
            return False
        if stat is not None and not stat.exited:
            return True
        return bool(_live_members(self.pid))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Signal the whole group, wait for every member to exit and reap the leader if it is
        our child; SIGKILL the group after `timeout`. Returns only once nothing of the group
        runs, so a following start never meets the old process."""
        if self.group_running():
            self._signal_group(sig)
            if not self._wait_gone(timeout):
                self._signal_group(signal.SIGKILL)
                if not self._wait_gone(KILL_GRACE_S):
                    raise RuntimeError(f"process group {self.pid} still runs after SIGKILL")
        # the leader may have exited after the last reap: an exited process stays reapable
        # until reaped, so this reap cannot miss it
        self._reap()

    def _signal_group(self, sig: int) -> None:
        if self.group_running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._reap()
            if not self.group_running():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)

    def _reap(self) -> None:
        """Collect the leader's exit status if it is our child (else its parent or init does)."""
        stat = _stat(self.pid)
        if stat is None or stat.start_ticks != self.start_ticks:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, os.WNOHANG)


def _live_members(pgid: int) -> list[int]:
    """Pids of the group's members that have not exited."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat.pgrp == pgid and not stat.exited:
                members.append(int(entry.name))
    return members
