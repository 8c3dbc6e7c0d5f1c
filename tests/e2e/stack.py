"""The end-to-end stack as the tests drive it: the `make demo` services on smaller data, the
workflow store, and the waits the tests share."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from fuxictr_workflow.domain.config import WorkflowConfig, load_config
from fuxictr_workflow.domain.stages import FINAL_TASK_STATUSES
from fuxictr_workflow.store import WorkflowStore
from scripts import demo
from scripts.hive_server import HiveServer

SAMPLE_ROWS, INFER_ROWS = 6000, 1500
# the first line of the agent's source, which the training server runs as `python -S -c <source>`
AGENT_MARK = b"The transfer agent: "
# how long the frozen transfer agents run between two looks while a test waits for a part-way upload
SLICE_S = 0.02


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def services_for(work: Path, executor: str, hive: HiveServer | None = None) -> demo.Services:
    """The demo's services with the e2e settings: small data, small transfer chunks, and
    Airflow quick to notice dead task processes and schedulers; `hive` is the session's server
    (one JVM for the whole test session)."""
    return demo.Services(
        work,
        free_port(),
        sample_rows=SAMPLE_ROWS,
        infer_rows=INFER_ROWS,
        config={
            # small chunks: a transfer spans enough time and chunks for a fault to land mid-way
            "transfer": {"chunk_size": 4 * 1024, "parallel_workers": 1, "max_retries": 4},
            "task": {"heartbeat_interval": 2, "retries": 4, "retry_delay_s": 5},
        },
        airflow_env={
            # a task whose process died is noticed within 30 s instead of Airflow's 5 minutes
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "15",
            # a task left running by a killed scheduler is reset within 10 s, not 5 minutes
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
            # the DAG file and the config it reads do not change during a test session: parse it
            # at start (and for callbacks, which are parsed at once) rather than every 30 s
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "900",
        },
        executor=executor,
        hive=hive,
    )


@contextmanager
def running_stack(work: Path, executor: str, hive: HiveServer | None = None) -> Iterator[Stack]:
    services = services_for(work, executor, hive)
    try:
        services.start()
        yield Stack(services)
    finally:
        services.stop()


class Stack:
    def __init__(self, services: demo.Services) -> None:
        self.services = services
        self.port = services.port
        self.store = WorkflowStore(self.config().store.url)
        self._token: str | None = None

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = demo.get_token(self.port, self.services.airflow_home)
        return self._token

    @property
    def config_path(self) -> Path:
        return Path(self.services.env["FUXICTR_WORKFLOW_CONFIG"])

    def config(self) -> WorkflowConfig:
        return load_config(self.config_path)

    @contextmanager
    def config_changed(self, sections: dict[str, dict[str, Any]]) -> Iterator[None]:
        """The stack's config.yaml with these keys changed, restored afterwards (every process
        reads the file again once it changed). A mapping value (a server's settings) is merged
        into the one it changes."""
        original = self.config_path.read_text()
        data = demo.merged(yaml.safe_load(original), sections)
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        try:
            yield
        finally:
            self.config_path.write_text(original)

    def submit(self, name: str) -> int:
        body = {**demo.SEED_BODY, "name": name, "hdfs_path": str(self.services.work / "hdfs")}
        created = demo.api(self.port, self.token, "POST", "/api/workflow/tasks", body)
        assert created["status"] == "pending"
        return int(created["task_id"])

    def wait_final(self, task_id: int, timeout: float = 1200) -> dict[str, Any]:
        # a whole pipeline on a 2-CPU machine loaded by other work has taken over 12 minutes
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.store.get_task(task_id)
            if task["status"] in FINAL_TASK_STATUSES:
                return task
            time.sleep(1)
        raise AssertionError(f"task {task_id} not final after {timeout}s: {self.store.get_task(task_id)}")

    def wait_until(
        self, what: str, check: Callable[[], bool], timeout: float = 300, every: float = 0.05
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(every)
        raise AssertionError(f"timed out waiting for {what}")

    def small_chunks(self) -> contextlib.AbstractContextManager[None]:
        """1 KiB chunks (about 200 for the demo data) for the runs started inside the block: an
        upload long enough for upload_frozen_part_way to catch part-way on a heavily loaded
        machine (4 KiB ones were seen all verified first). A retry of such a run must start
        inside the block too, to cut the same chunks."""
        return self.config_changed({"transfer": {"chunk_size": 1024}})

    @contextmanager
    def upload_frozen_part_way(self, task_id: int, timeout: float = 300) -> Iterator[list[int]]:
        """Hold data_upload part-way: the training server's transfer agents are frozen (SIGSTOP)
        as soon as they appear and then let run in short slices until some, not all, chunks are
        verified, so the upload cannot finish before the test's fault lands however slowly the
        test process is scheduled (watching a free-running upload for its first verified chunk
        saw a small one finish on a loaded machine). On leaving they are let go (SIGCONT), for the
        ones the fault did not kill to see it. Yields the frozen pids."""
        frozen: set[int] = set()

        def signal_all(sig: int) -> None:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

        def part_way() -> bool:
            frozen.update(self.transfer_agents())
            signal_all(signal.SIGSTOP)
            chunks = self.store.chunks(task_id, "data_upload")
            done = sum(c["status"] == "verified" for c in chunks)
            assert not chunks or done < len(chunks), "data_upload finished before its agents were frozen"
            if frozen and done:
                return True
            signal_all(signal.SIGCONT)  # a slice of work, then frozen again on the next look
            time.sleep(SLICE_S)
            return False

        try:
            self.wait_until("data_upload to be part-way", part_way, timeout, every=0)
            yield sorted(frozen)
        finally:
            signal_all(signal.SIGCONT)

    def transfer_agents(self) -> list[int]:
        """The transfer agents running under this stack's sshd (its listener's descendants)."""
        info = self.services.sshd.running()
        if info is None:
            return []
        parents: dict[int, int] = {}
        agents = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
            if AGENT_MARK in cmdline:
                agents.append(int(entry.name))

        def under_sshd(pid: int) -> bool:
            while pid > 1:
                if pid == info.pid:
                    return True
                pid = parents.get(pid, 0)
            return False

        return [pid for pid in agents if under_sshd(pid)]

    def verified_chunks(self, task_id: int) -> set[str]:
        return {c["chunk_id"] for c in self.store.chunks(task_id, "data_upload") if c["status"] == "verified"}

    def assert_no_verified_chunk_resent(
        self, task_id: int, verified_before: set[str]
    ) -> list[dict[str, Any]]:
        """data_upload's chunks all verified, and none verified before a fault was sent again."""
        chunks = self.store.chunks(task_id, "data_upload")
        assert chunks and all(c["status"] == "verified" for c in chunks)
        resent = [c["chunk_id"] for c in chunks if c["chunk_id"] in verified_before and c["send_count"] != 1]
        assert not resent, f"verified chunks sent again: {resent}"
        return chunks

    def step_status(self, task_id: int, step: str) -> str:
        return next(s["status"] for s in self.store.get_task(task_id)["steps"] if s["step_name"] == step)

    def hive_rows(self, task_id: int) -> int:
        env = {k: v for k, v in self.services.env.items() if k.startswith("AIRFLOW_CONN_")}
        (rows,) = demo.hive_run(
            [f"SELECT count(*) FROM {demo.SEED_BODY['hive_table']} WHERE task_id = {int(task_id)}"], env
        )
        return int(rows[0][0])

    def assert_completed(self, task_id: int) -> dict[str, Any]:
        task = self.wait_final(task_id)
        failed = [(s["step_name"], s["error_message"]) for s in task["steps"] if s["status"] != "completed"]
        assert task["status"] == "completed", f"task {task_id} {task['status']}: {failed}"
        assert task["current_step"] == 5 and task["completed_at"] is not None
        assert all(s["started_at"] and s["completed_at"] for s in task["steps"])
        assert self.hive_rows(task_id) == INFER_ROWS
        return task
