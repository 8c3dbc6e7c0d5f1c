"""Follows the runner's detached job on the training server while its Airflow task is
deferred: no worker slot is held, the runner's lines still reach the workflow log (and so
the WebSocket) within a poll interval, and the task's heartbeat goes on.

The SSH work is the same plain-Python code the operator uses (runner_job.py) over a
connection resolved by SSHHook, run in a thread so the triggerer's event loop never blocks.
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

    def _ti_ref(self) -> tuple[str, str, str] | None:
        ti = self.task_instance
        return (ti.dag_id, ti.run_id, ti.task_id) if ti is not None else None

    async def _ask_ti_state_once(self) -> None:
        """on_kill must learn the task instance's state within the triggerer's on_kill_timeout
        (30 s by default). The triggerer answers the first such question of its life by building
        its API client, which took longer than that on a loaded machine; asking once at the
        start makes on_kill's question quick."""
        from fuxictr_workflow.orchestration import airflow_stops

        ref = self._ti_ref()
        if ref is None:
            return
        try:
            await asyncio.to_thread(airflow_stops.ti_state, ref)
        except Exception as err:  # on_kill asks again and says what failed
            self.log.info("could not read the task instance's state yet: %s", err)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        self._warm_up = asyncio.create_task(self._ask_ti_state_once())
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

    async def on_kill(self) -> None:
        """A user acted on the deferred task: stop the job unless the task was only cleared,
        and close the step of a task instance marked failed."""
        from fuxictr_workflow.orchestration import airflow_stops
        from fuxictr_workflow.workflow_log import get_logger

        logger, task_id = get_logger(), self.kwargs["task_id"]
        why = await asyncio.to_thread(airflow_stops.why_job_stops, logger, self._ti_ref(), task_id)
        if why is None:
            self.log.info("task instance was cleared: the runner job is left for its next try to follow")
            return
        await asyncio.to_thread(airflow_stops.announce_stop, logger, task_id, self.kwargs["step"], why)

        def stop() -> None:
            client, run = self._connect()
            try:
                self._follower(run).job.stop()
            finally:
                client.close()

        try:
            await asyncio.to_thread(stop)
        except Exception as err:  # the step is still closed, its error saying what is left running
            self.log.warning("could not stop the runner job: %s", err)
            stopped = False
        else:
            stopped = True
        await asyncio.to_thread(
            airflow_stops.close_step_marked, logger, task_id, self.kwargs["step"], why, stopped
        )
