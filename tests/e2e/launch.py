"""The runs the e2e package starts before its first test checks one: pipelines that inject no
fault run side by side on the one stack (the training pool orders their train and infer), and
the tests check them one by one.

    api_task     created through the plugin's API, its log followed over the WebSocket from the
                 start; once completed it is the task the train-stage fault tests re-run
    rest_run     a DAG run triggered through Airflow's REST API (the official client) with the
                 six fields in conf, as the UI's trigger form sends it
    failing_task reads a table that does not exist yet: data_fetch fails with Hive's error
    dags_test    `airflow dags test` in a process of its own (own metadata DB, own store, no
                 scheduler), in a thread

The first two start at once; the other two once the API task is final, so they run beside the
fault tests' waits rather than slow the first pipelines the first test waits for.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from scripts import airflow_stack, demo
from tests.e2e.stack import Stack

DAG = "fuxictr_workflow"
LATE_TABLE = "demo.ctr_late"


class LogFollower(threading.Thread):
    """A WebSocket client following one task's log, reconnecting with `after` on drops."""

    def __init__(self, stack: Stack, task_id: int) -> None:
        super().__init__(daemon=True)
        self.stack, self.task_id = stack, task_id
        self.events: list[dict[str, Any]] = []
        self.reconnects = 0
        self.closed_normally = False

    def run(self) -> None:
        asyncio.run(self._follow())

    async def _follow(self) -> None:
        import websockets

        base = f"ws://127.0.0.1:{self.stack.port}/api/workflow/tasks/{self.task_id}/logs?token={self.stack.token}"
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            try:
                async with websockets.connect(f"{base}&after={len(self.events)}", open_timeout=10) as ws:
                    async for raw in ws:
                        self.events.append(json.loads(raw))
                    self.closed_normally = ws.close_code == 1000
                    return
            except (OSError, websockets.ConnectionClosedError, websockets.InvalidStatus, TimeoutError):
                self.reconnects += 1
                await asyncio.sleep(0.5)


def fields(stack: Stack, name: str) -> dict[str, str]:
    return {**demo.SEED_BODY, "name": name, "hdfs_path": str(stack.services.work / "hdfs")}


def trigger(stack: Stack, conf: dict[str, Any]) -> dict[str, Any]:
    """A DAG run with conf through Airflow's official Python client (POST .../dagRuns, as the
    UI's trigger form sends it, with a logical date)."""
    from airflow_client.client import ApiClient, Configuration
    from airflow_client.client.api.dag_run_api import DagRunApi
    from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody

    config = Configuration(host=f"http://127.0.0.1:{stack.port}", access_token=stack.token)
    with ApiClient(config) as client:
        body = TriggerDAGRunPostBody(logical_date=datetime.now(UTC), conf=conf)
        run = DagRunApi(client).trigger_dag_run(DAG, body, _request_timeout=180)
    return {"dag_run_id": run.dag_run_id, "state": str(run.state.value)}


class DagsTest(threading.Thread):
    """`airflow dags test fuxictr_workflow -c conf.json` against a copy of the stack's config
    with its own store, staging and log dir (log files rotating at 4 KiB), and its own Airflow
    metadata DB (`db migrate` first)."""

    def __init__(self, stack: Stack, root: Path) -> None:
        super().__init__(daemon=True)
        self.root = root
        config = yaml.safe_load(stack.config_path.read_text())
        config["task"]["log_rotation_size"] = 4096
        config["store"]["url"] = f"sqlite:///{root / 'workflow.db'}"
        config["storage"] = {k: str(root / k) for k in ("staging_dir", "log_dir")}
        # Its store numbers tasks from 1 like the stack's: on a shared remote_root both would
        # write to the server's task_1 directory.
        for server in config["servers"].values():
            server["remote_root"] = str(root / "server")
        self.store_url = config["store"]["url"]
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        self.conf = {**fields(stack, "dags-test"), "hdfs_path": str(root / "hdfs")}
        self.env = {
            **stack.services.env,
            "AIRFLOW_HOME": str(root / "airflow"),
            "FUXICTR_WORKFLOW_CONFIG": str(root / "config.yaml"),
        }
        self.out: subprocess.CompletedProcess[str] | None = None
        self.error: BaseException | None = None
        self.process: subprocess.Popen[str] | None = None

    def run(self) -> None:
        airflow = str(airflow_stack.VENV_BIN / "airflow")
        try:
            subprocess.run(
                [airflow, "db", "migrate"], env=self.env, check=True, capture_output=True, timeout=300
            )
            command = [airflow, "dags", "test", DAG, "-c", json.dumps(self.conf)]
            self.process = subprocess.Popen(
                command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            stdout, stderr = self.process.communicate(timeout=900)
            self.out = subprocess.CompletedProcess(command, self.process.returncode, stdout, stderr)
        except BaseException as err:  # reported by the test that joins the thread
            self.error = err

    def stop(self, timeout: float) -> None:
        """Let it finish (a module that does not check it, run alone, still leaves nothing
        running); stopped when it has not within `timeout`."""
        self.join(timeout)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.join(60)

    def result(self, timeout: float) -> subprocess.CompletedProcess[str]:
        self.join(timeout)
        assert not self.is_alive(), f"`airflow dags test` still running after {timeout:.0f}s"
        if self.error is not None:
            raise self.error
        assert self.out is not None
        return self.out


class Later(threading.Thread):
    """Once the API task is final: the failing task submitted, `airflow dags test` started."""

    def __init__(self, stack: Stack, root: Path, api_task: int) -> None:
        super().__init__(daemon=True)
        self.stack, self.root, self.api_task = stack, root, api_task
        self.failing_task: int | None = None
        self.dags_test: DagsTest | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.stack.wait_final(self.api_task)
            failing = {
                **fields(self.stack, "retry"),
                "sample_sql": f"SELECT * FROM {LATE_TABLE} WHERE dt = '2024-01-01'",
            }
            created = demo.api(self.stack.port, self.stack.token, "POST", "/api/workflow/tasks", failing)
            self.failing_task = int(created["task_id"])
            self.dags_test = DagsTest(self.stack, self.root)
            self.dags_test.start()
        except BaseException as err:  # reported by the test that asks for them
            self.error = err

    def started(self) -> Later:
        self.join(1500)
        assert not self.is_alive(), "the API task did not end"
        if self.error is not None:
            raise self.error
        return self


@dataclass
class Launched:
    api_task: int
    follower: LogFollower
    rest_run: str
    later: Later

    @property
    def failing_task(self) -> int:
        task_id = self.later.started().failing_task
        assert task_id is not None
        return task_id

    def stop(self) -> None:
        """What the package started and no test waited for ends with the package."""
        self.later.join(1500)
        if self.later.dags_test is not None:
            self.later.dags_test.stop(900)

    @property
    def dags_test(self) -> DagsTest:
        run = self.later.started().dags_test
        assert run is not None
        return run


def launch(stack: Stack, root: Path) -> Launched:
    api_task = stack.submit("e2e")
    follower = LogFollower(stack, api_task)
    follower.start()
    rest_run = trigger(stack, fields(stack, "rest-trigger"))["dag_run_id"]
    later = Later(stack, root, api_task)
    later.start()
    return Launched(api_task, follower, rest_run, later)
