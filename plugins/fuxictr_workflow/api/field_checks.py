"""The task body's field checks, in processes of their own beside the API server.

The SQL checks are CPU-bound pure Python (sqlglot's tokenizer, parser and generator). In a
thread of the API server they hold its interpreter lock: while one runs, every other request
of that server waits for it, however cheap (docs/api.md has the figures). In a process of their
own they share nothing with the server but the body's fields, the config and the answer.

CHECK_PROCESSES processes, started with the forkserver context (the API server has threads,
and a fork of it would copy their held locks) as the API server starts (the app's lifespan,
which Airflow's API server runs for plugin apps) and stopped with it. A request that finds
them still starting, or the first after one died (killed, out of memory: the pool is then
replaced), waits for their imports before its time limit starts.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic import ValidationError

from fuxictr_workflow.api.schemas import TaskCreateRequest
from fuxictr_workflow.domain import sql_budget, task_fields
from fuxictr_workflow.domain.config import WorkflowConfig

# Two checks at once; more requests wait in the pool's queue, and each is answered when its
# own time limit is reached (task_body.py), so a flood of slow queries costs two cores at most.
CHECK_PROCESSES = 2
# How long a request waits for new check processes to import what they need.
START_S = 60.0


@dataclass(frozen=True)
class Checked:
    body: TaskCreateRequest | None  # when valid
    errors: list[dict[str, Any]] = field(default_factory=list)  # pydantic's, without inputs


def check(data: dict[str, Any], cfg: WorkflowConfig, seconds: float) -> Checked:
    """In a check process: the body validated against `cfg`, its queries within one budget
    whose clock starts here."""
    budget = sql_budget.Budget(seconds=seconds)
    context = {task_fields.CONTEXT_CONFIG: cfg, task_fields.CONTEXT_BUDGET: budget}
    try:
        return Checked(TaskCreateRequest.model_validate(data, context=context))
    except ValidationError as err:
        return Checked(None, err.errors(include_url=False, include_input=False, include_context=False))


def _pid() -> int:
    return os.getpid()


@dataclass
class _Pool:
    executor: ProcessPoolExecutor
    started: threading.Event


class CheckProcesses:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: _Pool | None = None

    def _current(self, broken: _Pool | None = None) -> _Pool:
        """The pool, started if there is none; a new one in place of `broken` (unless another
        request replaced it already)."""
        with self._lock:
            if self._pool is None or self._pool is broken:
                if broken is not None:
                    broken.executor.shutdown(wait=False, cancel_futures=True)
                executor = ProcessPoolExecutor(
                    CHECK_PROCESSES, mp_context=multiprocessing.get_context("forkserver")
                )
                self._pool = _Pool(executor, threading.Event())
                threading.Thread(target=self._start, args=(self._pool,), daemon=True).start()
            return self._pool

    def start(self) -> None:
        """Start the processes in the background (a no-op once they are)."""
        self._current()

    def stop(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.executor.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _start(pool: _Pool) -> None:
        try:
            for started in [pool.executor.submit(_pid) for _ in range(CHECK_PROCESSES)]:
                started.result()
        except BrokenProcessPool:
            pass  # the request that waits for it finds the pool broken and replaces it
        pool.started.set()

    async def check(
        self, data: dict[str, Any], cfg: WorkflowConfig, seconds: float, limit: float
    ) -> Checked | None:
        """The check's answer, or None if it did not come within `limit` seconds (a check
        still queued is then cancelled; a running one ends at its budget's deadline)."""
        broken: _Pool | None = None
        for attempt in (1, 2):
            pool = self._current(broken)
            await anyio.to_thread.run_sync(pool.started.wait, START_S)
            try:
                future = pool.executor.submit(check, data, cfg, seconds)
                with anyio.fail_after(limit):
                    return await asyncio.wrap_future(future)
            except BrokenProcessPool:  # a check process died, before or during this check
                if attempt == 2:
                    raise
                broken = pool
            except TimeoutError:
                return None
        raise AssertionError("unreachable")


PROCESSES = CheckProcesses()


async def checked(data: dict[str, Any], cfg: WorkflowConfig, limit: float) -> Checked | None:
    return await PROCESSES.check(data, cfg, sql_budget.API_SECONDS, limit)
