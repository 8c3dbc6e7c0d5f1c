"""The stand-in servers stop for good and start again, every time.

Each server is stopped and started several times in a row; after every start the server must
serve (sshd runs a command, HiveServer2 answers a query) and nothing of the stopped server may
be left. The default suite restarts each server 3 times on quiet CPUs, Hive's in the
foreground of its test. The `stress` variants (`make test-stress`, see tests/services/stress.py)
restart each 20 times while other processes keep every CPU busy (a fresh CI machine is slower
and busier than a quiet one): sshd's loop beside one full-priority spinner per CPU, Hive's
beside the rest of the suite (see tests/services/restart_loop.py), its test checking the
loop's report. The checks per restart are the same in both. The process bookkeeping under it
(scripts/processes.py) is checked on real processes: a zombie or a reused pid is never taken
for a running server, and a stop reaps what it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from scripts.processes import ProcessRef
from scripts.sshd import LocalSshd, SshdInfo
from tests.services import restart_loop
from tests.services.hive_restarts import BackgroundRestarts
from tests.services.restart_loop import gone, spinners
from tests.services.stress import RESTART_MODES, RestartMode


@contextmanager
def busy_cpus(busy: bool) -> Iterator[None]:
    """If `busy`: one spinning process per CPU, at full priority, meanwhile."""
    spin = spinners(niceness=0) if busy else []
    try:
        yield
    finally:
        for proc in spin:
            ProcessRef.of(proc.pid).stop(signal.SIGKILL)


def ssh_echo(info: SshdInfo, word: str) -> str:
    out = subprocess.run(
        ["ssh", "-i", info.key_path, "-p", str(info.port), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={info.known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", "ConnectTimeout=20", f"{info.username}@{info.host}", "echo", word],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize("mode", RESTART_MODES)
def test_sshd_restarts_and_serves_every_time(tmp_path: Path, mode: RestartMode) -> None:
    with busy_cpus(mode.busy):
        restart_sshd(tmp_path, mode.restarts)


def restart_sshd(tmp_path: Path, restarts: int) -> None:
    server = LocalSshd(tmp_path / "sshd")
    info = server.start()
    try:
        for i in range(restarts):
            server.stop()
            assert server.running() is None and not server.serving()
            assert gone(info.process)
            info = server.start()
            assert server.serving(), f"restart {i}: sshd does not answer"
            assert ssh_echo(info, f"restart-{i}") == f"restart-{i}"
    finally:
        server.stop()
    assert gone(info.process)


@pytest.mark.slow
@pytest.mark.stack  # it starts Spark Thrift Servers of its own
@pytest.mark.parametrize("mode", RESTART_MODES)
def test_hive_restarts_and_answers_every_time(
    tmp_path: Path, mode: RestartMode, hive_restarts: BackgroundRestarts | None
) -> None:
    """Every restart of the loop (tests/services/restart_loop.py) stopped the old server
    completely and the new one answered its query. Stress: the loop started with the session
    and has run beside the other tests; else it runs here."""
    if mode.busy:
        assert hive_restarts is not None
        rows = hive_restarts.wait(timeout=2400)
    else:
        report = tmp_path / "report.jsonl"
        restart_loop.run(tmp_path / "hive", mode.restarts, report, busy=False)
        rows = restart_loop.read_report(report)
    check_hive_report(rows, mode.restarts)


def check_hive_report(rows: list[dict[str, Any]], count: int) -> None:
    restarts = [r for r in rows if "i" in r]
    assert rows[-1].get("done") and rows[-1]["last_gone"], rows[-1]
    assert [r["i"] for r in restarts] == list(range(count)), rows
    for r in restarts:
        assert r["stopped"] and r["old_gone"], f"restart {r['i']}: the old server was not gone: {r}"
        assert r["answered"] == r["i"] + 1, f"restart {r['i']}: the server did not answer: {r}"
    print("seconds per restart:", [r["seconds"] for r in restarts])


# -- the bookkeeping itself, on real processes --


def spawn(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(list(argv), start_new_session=True)


def wait_for(what: str, check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_an_unreaped_zombie_is_not_running_and_stop_reaps_it() -> None:
    proc = spawn("sleep", "600")
    process = ProcessRef.of(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # dies; nobody has waited for it yet
    wait_for(
        "the zombie", lambda: Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    )
    os.kill(proc.pid, 0)  # what the old check relied on: it succeeds on a zombie
    assert not process.running() and not process.group_running()
    process.stop()
    assert not Path(f"/proc/{proc.pid}").exists(), "stop left the zombie unreaped"


def test_a_leader_whose_main_thread_ended_runs_until_its_last_thread_does() -> None:
    """As a JVM in its shutdown hooks: the leader reads as a zombie, yet a thread still runs."""
    code = (
        "import ctypes, threading, time\n"
        "threading.Thread(target=time.sleep, args=(600,)).start()\n"
        "ctypes.CDLL(None).pthread_exit(None)\n"
    )
    proc = spawn(sys.executable, "-c", code)
    process = ProcessRef.of(proc.pid)
    wait_for(
        "the main thread to end",
        lambda: Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
    )
    assert process.running() and process.group_running()
    process.stop()
    assert not process.group_running()
    assert not Path(f"/proc/{proc.pid}").exists()


def test_stop_waits_for_the_whole_group_and_reaps_the_leader() -> None:
    # the leader ignores nothing, its child outlives a plain SIGTERM to the leader alone
    proc = spawn("sh", "-c", "trap '' TERM; sleep 600 & wait")
    process = ProcessRef.of(proc.pid)
    wait_for("the group's child", lambda: len(group_members(proc.pid)) >= 2)
    process.stop(timeout=1)  # TERM is ignored: escalates to KILL
    assert not group_members(proc.pid)
    assert not Path(f"/proc/{proc.pid}").exists()


def test_a_reused_pid_is_never_taken_for_ours_nor_signalled() -> None:
    stranger = spawn("sleep", "600")
    try:
        real = ProcessRef.of(stranger.pid)
        ours_before = ProcessRef(stranger.pid, real.start_ticks - 1)  # same pid, earlier process
        assert not ours_before.running() and not ours_before.group_running()
        ours_before.stop(timeout=1)
        assert real.running(), "stop signalled a process that only shares the pid"
    finally:
        ProcessRef.of(stranger.pid).stop()


def group_members(pgid: int) -> list[int]:
    """Members of the group that have not exited (an orphan's zombie waits for init)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,pgid=,stat="], capture_output=True, text=True).stdout
    rows = (line.split() for line in out.splitlines())
    return [int(pid) for pid, group, stat in rows if int(group) == pgid and not stat.startswith("Z")]
