"""Follows the runner's detached job on the training server while its Airflow task is
deferred: no worker slot is held, the runner's lines still reach the workflow log (and so
the WebSocket) within a poll interval, and the task's heartbeat goes on.

The SSH work is the same plain-Python code the operator uses (runner_job.py) over a
connection resolved by SSHHook, run in a thread so the triggerer's event loop never blocks.

A user's mark of the deferred task instance is not this trigger's to act on: the plugin's
listener sees it in the API server and stops the job (orchestration/listeners.py); a clear
leaves the job for the next try to follow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

# consecutive failed polls (the link or the server is down) before the stage fails; they are
# spaced by a growing delay, so this covers several minutes of outage
MAX_FAILED_POLLS = 12


class RunnerJobTrigger(BaseTrigger):
    def __init__(
        self,
        *,
        task_id: int,
        step: str,
        command: str,
        server: str,
        python: str,
        job_py: str,
        job_dir: str,
        poll_interval: float = 1.0,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        self.kwargs = {
            "task_id": task_id,
            "step": step,
            "command": command,
            "server": server,
            "python": python,
            "job_py": job_py,
            "job_dir": job_dir,
            "poll_interval": poll_interval,
            "deadline": deadline,
        }

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", dict(self.kwargs)

    def _connect(self) -> tuple[Any, Any]:
        from fuxictr_workflow.domain.config import get_config
        from fuxictr_workflow.ssh.commands import run_command
        from fuxictr_workflow.ssh.servers import endpoint

        client = endpoint(get_config(), self.kwargs["server"]).paramiko_client()
        return client, run_command(client)

    def _follower(self, run: Any) -> Any:
        from fuxictr_workflow.ssh.runner_job import JobFollower, RemoteJob, RunnerOutput
        from fuxictr_workflow.workflow_log import get_logger

        k = self.kwargs
        return JobFollower(
            job=RemoteJob(run, k["python"], k["job_py"], k["job_dir"]),
            task_id=k["task_id"],
            step=k["step"],
            logger=get_logger(),
            output=RunnerOutput(k["command"]),
            deadline=k.get("deadline"),
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        client = follower = None
        failures = 0
        while True:
            try:
                if client is None or not client.get_transport() or not client.get_transport().is_active():
                    client, run = await asyncio.to_thread(self._connect)
                    follower = self._follower(run)
                done = await asyncio.to_thread(follower.poll)
                failures = 0
            except Exception as err:
                failures += 1
                if client is not None:
                    client.close()
                    client = None
                if failures > MAX_FAILED_POLLS:
                    yield TriggerEvent(
                        {"state": "lost", "error": f"{type(err).__name__}: {err}", "job": self.kwargs}
                    )
                    return
                self.log.warning("polling the runner job failed (%d/%d): %s", failures, MAX_FAILED_POLLS, err)
                await asyncio.sleep(min(2**failures, 30))
                continue
            if done:
                client.close()
                yield TriggerEvent({**follower.final, "job": self.kwargs})
                return
            await asyncio.sleep(self.kwargs["poll_interval"])
