"""Issue 16 on the CeleryExecutor stack: stages run on whichever worker Celery hands them to,
a worker lost mid-stage is survived, and nothing serves beyond 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fuxictr_workflow import retention
from fuxictr_workflow.domain import paths
from fuxictr_workflow.store import utcnow
from fuxictr_workflow.store.database import tasks
from scripts import airflow_stack, demo
from tests.conftest import new_task
from tests.e2e.stack import Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DAG = "fuxictr_workflow"
WORKERS = set(airflow_stack.worker_names(demo.CELERY_WORKERS))


def task_instances(stack: Stack, run_id: str) -> dict[str, dict[str, Any]]:
    """Airflow's record of each task instance of the run (its latest try), by task id."""
    tis = demo.api(
        stack.port, stack.token, "GET", f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances", timeout=180
    )
    return {ti["task_id"]: ti for ti in tis["task_instances"]}


def children() -> dict[int, list[int]]:
    """Each process's children, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def host_pids(stack: Stack, name: str) -> set[int]:
    """Every process of one worker "host": the celery worker and all it started (its pool, the
    task supervisors, the tasks in their own process groups, their ssh clients)."""
    pid = airflow_stack.running(stack.services.airflow_home).get(name)
    if pid is None:
        return set()
    tree, found, todo = children(), set(), [pid]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(tree.get(current, []))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def lose_host(stack: Stack, name: str) -> list[str]:
    """The worker's machine is gone: every process of it stopped at once (so none forks or
    cleans up meanwhile), then SIGKILLed. Returns the command lines of what was killed."""
    pids = host_pids(stack, name)
    killed = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        with contextlib.suppress(OSError):
            killed.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    airflow_stack.stop_one(stack.services.airflow_home, name)  # reaps the leader, forgets its pid file
    stack.wait_until(f"{name}'s processes to be gone", lambda: not any(alive(p) for p in pids), timeout=60)
    return killed


def leave_expired_task_dirs(stack: Stack) -> list[Path]:
    """A task finished long before the retention cutoff whose staging and log dirs are still on
    both workers, each worker due for its sweep: what the next stages on them must remove."""
    demo.api(stack.port, stack.token, "GET", "/api/workflow/tasks")  # the API server made the schema
    expired = new_task(stack.store, name="celery-expired", server="local")
    long_ago = utcnow() - timedelta(days=365)
    stack.store.db.write(
        lambda conn: conn.execute(
            tasks.update().where(tasks.c.id == expired).values(status="completed", updated_at=long_ago)
        )
    )
    left = []
    for name in WORKERS:
        scratch = airflow_stack.worker_home(stack.services.airflow_home, name)
        for root in (scratch / "staging", scratch / "logs" / "workflow"):
            left.append(root / paths.task_dirname(expired))
            (left[-1] / "sample").mkdir(parents=True, exist_ok=True)
        stamp = scratch / "staging" / retention.SWEEP_STAMP
        if stamp.exists():
            due = time.time() - retention.SWEEP_EVERY.total_seconds() - 60
            os.utime(stamp, (due, due))
    return left


def test_a_pipeline_runs_across_both_workers(stack: Stack) -> None:
    """One pipeline completes with its task instances spread over both workers (Airflow's
    task instance hostnames), and the rows in Hive equal the inference rows. Each worker's
    stages sweep its own disk: an expired task's staging and log dirs are gone from both."""
    expired_dirs = leave_expired_task_dirs(stack)
    task_id = stack.submit("celery-e2e")
    task = stack.assert_completed(task_id)
    tis = task_instances(stack, task["dag_run_id"])
    hosts = {ti["task_id"]: ti["hostname"] for ti in tis.values()}
    assert set(hosts.values()) == WORKERS, hosts
    assert all(ti["state"] == "success" for ti in tis.values()), tis
    uploader = hosts["data_upload"]
    staged = paths.staging_dataset_dir(
        str(airflow_stack.worker_home(stack.services.airflow_home, uploader) / "staging"), task_id, "sample"
    )
    assert any(staged.glob("*.parquet")), f"data_upload's worker {uploader} has no staged copy at {staged}"
    assert [d for d in expired_dirs if d.exists()] == []


def test_a_worker_lost_mid_upload_is_survived_on_the_other(stack: Stack) -> None:
    """The worker running data_upload loses its machine part-way: Airflow retries the stage on
    the other worker, which fetches the data from HDFS and sends only the chunks not verified
    before; the pipeline completes with the rows in Hive exact."""
    with stack.small_chunks():
        task_id = stack.submit("celery-lost-worker")
        with stack.upload_frozen_part_way(task_id, timeout=900):
            run_id = stack.store.get_task(task_id)["dag_run_id"]
            victim = task_instances(stack, run_id)["data_upload"]["hostname"]
            killed = lose_host(stack, victim)
            assert any("fuxictr_workflow" in k or "airflow" in k for k in killed), killed
            verified_at_kill = stack.verified_chunks(task_id)
        lost_at = time.monotonic()

        stack.assert_completed(task_id)

    upload = task_instances(stack, run_id)["data_upload"]
    assert upload["hostname"] in WORKERS - {victim} and upload["try_number"] >= 2, upload
    stack.assert_no_verified_chunk_resent(task_id, verified_at_kill)
    print(
        f"lost {victim}; pipeline completed {time.monotonic() - lost_at:.0f}s later on {upload['hostname']}"
    )


def listening_sockets() -> dict[int, str]:
    """Listening TCP sockets on this machine: inode → local address."""
    found = {}
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            addr = bytes.fromhex(fields[1].split(":")[0])
            if v6:
                words = [addr[i : i + 4][::-1] for i in range(0, 16, 4)]
                text = ":".join(b"".join(words).hex()[i : i + 4] for i in range(0, 32, 4))
            else:
                text = ".".join(str(b) for b in addr[::-1])
            found[int(fields[9])] = text
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            target = os.readlink(fd.path)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def stack_pids(stack: Stack) -> set[int]:
    """The processes of the stack's process groups: Airflow's, the workers' and the servers'."""
    services = stack.services
    groups = set(airflow_stack.running(services.airflow_home).values())
    for info in (
        r()
        for r in (
            services.postgres.running,
            services.redis.running,
            services.sshd.running,
            services.hive.running,
        )
    ):
        if info is not None:
            groups.add(info.pid)
    pids = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) in groups:
                pids.add(int(entry.name))
    return pids


def test_every_server_of_the_stack_listens_on_loopback_only(stack: Stack) -> None:
    listening = listening_sockets()
    loopback = {
        "127.0.0.1",
        "0000:0000:0000:0000:0000:ffff:7f00:0001",
        "0000:0000:0000:0000:0000:0000:0000:0001",
    }
    seen: dict[int, list[str]] = {}
    for pid in stack_pids(stack):
        addresses = [listening[i] for i in socket_inodes(pid) if i in listening]
        if addresses:
            seen[pid] = addresses
    assert len(seen) >= 5, (
        f"too few listening processes found: {seen}"
    )  # api-server, sshd, Hive, PostgreSQL, Redis
    exposed = {pid: a for pid, a in seen.items() if set(a) - loopback}
    assert not exposed, f"listening beyond 127.0.0.1: {exposed}"
