"""WS /tasks/{id}/logs: the task's past log events, then new ones as they are written.

Messages are exactly the seed's ``{task_id, step, message, level, timestamp}``. ``after=N``
(additive) skips the first N events, so a client that reconnects resumes without gaps or
duplicates. The socket closes with 1000 once the task is final and its last event is sent;
1008 without a valid token, 4404 for an unknown task.

Live events come from one poller per task (:class:`TaskFeed`) that reads the store and fans
each batch, serialized once, out to every client of that task: ten viewers cost the store
what one does. A client reads its own history first, subscribes, reads once more, and from
then on skips anything it already sent (event ids are increasing), so nothing is lost or
sent twice at the hand-over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from fuxictr_workflow.api.security import websocket_user
from fuxictr_workflow.stages import FINAL_TASK_STATUSES
from fuxictr_workflow.store import NotFound, WorkflowStore, get_store, iso

router = APIRouter(tags=["Logs"])
log = logging.getLogger(__name__)

POLL_S = 0.05
FINAL_GRACE_S = 0.5
BATCH = 1000
CLOSE = None  # queued to subscribers once the task is final and drained

Batch = list[tuple[int, str]]  # (event id, the message as JSON text)


def _encode(events: list[dict[str, Any]]) -> Batch:
    return [
        (
            e["id"],
            json.dumps(
                {
                    "task_id": e["task_id"],
                    "step": e["step"],
                    "message": e["message"],
                    "level": e["level"],
                    "timestamp": iso(e["timestamp"]),
                }
            ),
        )
        for e in events
    ]


class TaskFeed:
    """The shared poller of one task's events; lives while the task has subscribers."""

    feeds: dict[int, TaskFeed] = {}

    def __init__(self, store: WorkflowStore, task_id: int, cursor: int) -> None:
        self.store = store
        self.task_id = task_id
        self.cursor = cursor
        self.queues: set[asyncio.Queue[Batch | None]] = set()
        self.poller = asyncio.create_task(self._poll())

    @classmethod
    def subscribe(cls, store: WorkflowStore, task_id: int, cursor: int) -> asyncio.Queue[Batch | None]:
        """A queue that receives every batch read after this call (no await: atomic in the loop)."""
        feed = cls.feeds.get(task_id)
        if feed is None or feed.poller.done():
            feed = cls.feeds[task_id] = cls(store, task_id, cursor)
        queue: asyncio.Queue[Batch | None] = asyncio.Queue()
        feed.queues.add(queue)
        return queue

    @classmethod
    def unsubscribe(cls, task_id: int, queue: asyncio.Queue[Batch | None]) -> None:
        feed = cls.feeds.get(task_id)
        if feed is not None:
            feed.queues.discard(queue)

    def _publish(self, item: Batch | None) -> None:
        for queue in self.queues:
            queue.put_nowait(item)

    async def _poll(self) -> None:
        final_seen = False
        try:
            while self.queues:
                try:
                    # status first: every event written before the task became final is read
                    task = await asyncio.to_thread(self.store.get_task, self.task_id, with_steps=False)
                    while events := await asyncio.to_thread(
                        self.store.logs_after, self.task_id, self.cursor, BATCH
                    ):
                        self.cursor = events[-1]["id"]
                        self._publish(_encode(events))
                except Exception:  # a store hiccup must not end every viewer's stream
                    log.exception("log feed of task %s: store read failed; retrying", self.task_id)
                    await asyncio.sleep(1.0)
                    continue
                if task["status"] in FINAL_TASK_STATUSES:
                    if final_seen:
                        self._publish(CLOSE)
                        return
                    final_seen = True  # one more drain: a writer may log right after the final state
                    await asyncio.sleep(FINAL_GRACE_S)
                    continue
                await asyncio.sleep(POLL_S)
        finally:
            if self.feeds.get(self.task_id) is self:
                del self.feeds[self.task_id]


async def _send_history(websocket: WebSocket, store: WorkflowStore, task_id: int, cursor: int) -> int:
    while events := await asyncio.to_thread(store.logs_after, task_id, cursor, BATCH):
        for _, text in _encode(events):
            await websocket.send_text(text)
        cursor = events[-1]["id"]
    return cursor


async def _until_disconnect(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


@router.websocket("/tasks/{task_id}/logs")
async def task_logs(websocket: WebSocket, task_id: int, after: int = 0) -> None:
    # accept first so the client sees the close code (closing a handshake is a bare 403)
    authorized = await websocket_user(websocket) is not None
    await websocket.accept()
    if not authorized:
        await websocket.close(
            code=1008, reason="authentication required: _token cookie or token query parameter"
        )
        return
    store = get_store()
    try:
        await asyncio.to_thread(store.get_task, task_id, with_steps=False)
    except NotFound:
        await websocket.close(code=4404, reason=f"task {task_id} does not exist")
        return
    cursor = 0
    if after > 0:
        skipped = await asyncio.to_thread(store.logs_after, task_id, 0, after)
        cursor = skipped[-1]["id"] if skipped else 0
    queue: asyncio.Queue[Batch | None] | None = None
    disconnected = asyncio.create_task(_until_disconnect(websocket))
    try:
        cursor = await _send_history(websocket, store, task_id, cursor)
        queue = TaskFeed.subscribe(store, task_id, cursor)
        cursor = await _send_history(websocket, store, task_id, cursor)  # written meanwhile
        while True:
            getter = asyncio.create_task(queue.get())
            await asyncio.wait({getter, disconnected}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                return
            batch = getter.result()
            if batch is CLOSE:
                await websocket.close(code=1000)
                return
            for event_id, text in batch:
                if event_id > cursor:
                    await websocket.send_text(text)
                    cursor = event_id
    except WebSocketDisconnect:
        return
    finally:
        disconnected.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await disconnected
        if queue is not None:
            TaskFeed.unsubscribe(task_id, queue)
