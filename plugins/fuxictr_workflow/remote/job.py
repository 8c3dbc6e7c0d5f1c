"""A detached job on the training server: started once, found again, read, stopped.

Stdlib only; shipped with the runner bundle and run by the server's Python. A job lives in
its own directory (the task's work dir has one per stage):

    job.json     pid, process group and kernel start time of the job, its argv
    log          a first line announcing the job (event job_started), then its stdout and stderr
    exit_code    written when the job has ended (143 when it was stopped)

    job.py start JOB_DIR -- ARGV...   start ARGV detached, unless a job runs there already
    job.py status JOB_DIR [OFFSET]    state, exit code, and the log from OFFSET (at most 1 MiB)
    job.py stop JOB_DIR               TERM (then CONT, then KILL after 10 s) to the job's group

Every command prints one JSON object. ``start`` starts a new job only when none is running
and the last one did not end with exit code 0, or when ``--again`` asks for a new run of a
finished job; otherwise it reports the existing job, so that a retried or re-deployed
Airflow task follows the job it already started instead of training twice.

The job runs under a small supervisor process (the leader of a new session and process
group) that waits for it and writes ``exit_code``; neither depends on the SSH session that
started them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

READ_MAX = 1 << 20
STOP_GRACE_S = 10.0
# how long `start` waits for a forked job to record itself (job.json) before it reports
# failed_to_start; the claim it leaves makes the next `start` report "starting" meanwhile
START_WAIT_S = 30.0


def _path(job_dir: str, name: str) -> str:
    return os.path.join(job_dir, name)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _start_ticks(pid: int) -> int | None:
    """The kernel's start time of pid (None when it does not exist): with it a reused pid
    is never taken for the job."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, ticks: int) -> bool:
    return _start_ticks(pid) == ticks


# a start that claimed the job dir but never recorded a job (its supervisor died at once)
# stops counting as "starting" after this long
CLAIM_STALE_S = 60.0


def _claim_age(job_dir: str) -> float | None:
    try:
        return time.time() - os.stat(_path(job_dir, "claim")).st_mtime
    except FileNotFoundError:
        return None


def state(job_dir: str) -> dict:
    """none | starting | running | finished, with the job's details (job.json)."""
    info_text = _read(_path(job_dir, "job.json"))
    exit_text = _read(_path(job_dir, "exit_code"))
    if info_text is None:
        age = _claim_age(job_dir)
        return {"state": "starting" if age is not None and age < CLAIM_STALE_S else "none"}
    info = json.loads(info_text)
    if exit_text is not None and exit_text.strip().lstrip("-").isdigit():
        # when the job ended (the exit code file's time): a follower may only see it much later
        try:
            ended_at = os.stat(_path(job_dir, "exit_code")).st_mtime
        except FileNotFoundError:  # archived between the read and the stat: a new job starts
            ended_at = None
        return {**info, "state": "finished", "exit_code": int(exit_text), "ended_at": ended_at}
    if _alive(info["supervisor_pid"], info["supervisor_ticks"]):
        return {**info, "state": "running"}
    # the supervisor died without writing an exit code (the server rebooted, or it was killed)
    return {**info, "state": "finished", "exit_code": None}


def _archive(job_dir: str) -> None:
    """Keep the previous run's files as <name>.prev, so a new run starts from empty files."""
    for name in ("job.json", "log", "exit_code"):
        if os.path.exists(_path(job_dir, name)):
            os.replace(_path(job_dir, name), _path(job_dir, name + ".prev"))


def _supervise(job_dir: str, argv: list[str], cwd: str) -> None:
    """In the new session: start the job, record it, wait for it, write its exit code."""
    # `stop` signals the whole group: the job ends, this process lives on to record how
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    log = os.open(_path(job_dir, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    # the start is announced in the job's own log, which followers deliver from the last
    # acknowledged offset: it reaches the workflow log even when the task that started the job
    # dies before it can say so
    announce = {"event": "job_started", "host": os.uname().nodename, "pgid": os.getpgid(0), "argv": argv}
    os.write(log, (json.dumps(announce) + "\n").encode())
    child = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    os.close(log)
    me = os.getpid()
    _write_atomic(
        _path(job_dir, "job.json"),
        json.dumps(
            {
                "supervisor_pid": me,
                "supervisor_ticks": _start_ticks(me),
                "pgid": os.getpgid(0),
                "pid": child.pid,
                "argv": argv,
                "started_at": time.time(),
            }
        ),
    )
    os.rmdir(_path(job_dir, "claim"))
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:
            continue
    if code < 0:  # killed by a signal: as a shell reports it
        code = 128 - code
    _write_atomic(_path(job_dir, "exit_code"), f"{code}\n")


def start(job_dir: str, argv: list[str], again: bool = False) -> dict:
    os.makedirs(job_dir, mode=0o700, exist_ok=True)
    current = state(job_dir)
    if current["state"] in ("running", "starting"):
        return {**current, "started": False}
    if current["state"] == "finished" and current.get("exit_code") == 0 and not again:
        return {**current, "started": False}
    if (_claim_age(job_dir) or 0.0) >= CLAIM_STALE_S:
        os.rmdir(_path(job_dir, "claim"))
    try:
        os.mkdir(_path(job_dir, "claim"))  # of two starters at once, one wins
    except FileExistsError:
        return {**state(job_dir), "started": False}
    _archive(job_dir)
    cwd = os.getcwd()
    pid = os.fork()
    if pid == 0:  # the supervisor: a session of its own, nothing of the caller's stdio
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            if os.fork() == 0:  # not a child of the SSH session's shell: reparented to init
                _supervise(job_dir, argv, cwd)
            os._exit(0)
        except BaseException:
            os._exit(1)
    os.waitpid(pid, 0)
    deadline = time.monotonic() + START_WAIT_S
    while (found := state(job_dir))["state"] in ("none", "starting"):
        if time.monotonic() > deadline:
            return {"state": "failed_to_start", "started": False, "waited_s": START_WAIT_S}
        time.sleep(0.02)
    return {**found, "started": True}


def status(job_dir: str, offset: int = 0) -> dict:
    """The job's state and its log from ``offset`` (where a follower has got to is kept on
    Airflow's side, in the workflow store)."""
    current = state(job_dir)
    data = b""
    try:
        with open(_path(job_dir, "log"), "rb") as f:
            f.seek(offset)
            data = f.read(READ_MAX)
    except FileNotFoundError:
        pass
    # whole lines only, so a line is never split between two reads
    end = data.rfind(b"\n") + 1 if len(data) == READ_MAX or current["state"] != "finished" else len(data)
    more = len(data) == READ_MAX
    return {**current, "offset": offset + end, "log": data[:end].decode("utf-8", "replace"), "more": more}


def stop(job_dir: str) -> dict:
    current = state(job_dir)
    if current["state"] != "running":
        return {**current, "stopped": False}
    pgid = int(current["pgid"])
    for sig in (signal.SIGTERM, signal.SIGCONT):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
    deadline = time.monotonic() + STOP_GRACE_S
    while state(job_dir)["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    if state(job_dir)["state"] == "running":
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.2)
    return {**state(job_dir), "stopped": True}


def main(argv: list[str]) -> int:
    command, job_dir, rest = argv[0], argv[1], argv[2:]
    if command == "start":
        again = "--again" in rest[: rest.index("--")]
        result = start(job_dir, rest[rest.index("--") + 1 :], again=again)
    elif command == "status":
        result = status(job_dir, int(rest[0]) if rest else 0)
    elif command == "stop":
        result = stop(job_dir)
    else:
        print(json.dumps({"error": f"unknown command {command}"}))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
