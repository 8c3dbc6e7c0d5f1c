"""WS /tasks/{id}/logs: the task's past log events, then new ones as they are written.

Messages are exactly the seed's ``{task_id, step, message, level, timestamp}``. ``after=N``
(additive) skips the first N events, so a client that reconnects resumes without gaps or
duplicates; N is a whole number up to ``AFTER_MAX``, skipped a batch at a time. The socket
closes with 1000 once the task is final and its last event is sent; 1008 without a valid
token, from a page of another origin, without read rights on the task's DAG or with an
``after`` out of range; 4401 when the token expires (reconnect with a fresh one); 4404 for
an unknown task; 1013 over the per-user connection cap or when the client reads too slowly
to keep up (it resumes with ``after``).
A ``token`` query parameter is cut from the request before the handshake is answered, so the
server's "WebSocket ... accepted" log line never shows it.

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
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from fuxictr_workflow.api import security
from fuxictr_workflow.api.guards import foreign_origin
from fuxictr_workflow.domain.config import get_config
from fuxictr_workflow.domain.stages import FINAL_TASK_STATUSES
from fuxictr_workflow.store import NotFound, WorkflowStore, get_store, iso

router = APIRouter(tags=["Logs"])
log = logging.getLogger(__name__)

POLL_S = 0.05
FINAL_GRACE_S = 0.5
BATCH = 1000
CLOSE = None  # queued to subscribers once the task is final and drained
OVERFLOW: list[tuple[int, str]] = []  # (by identity) the subscriber fell too far behind

Batch = list[tuple[int, str]]  # (event id, the message as JSON text)
Queue = asyncio.Queue[Batch | None]

open_sockets: Counter[str] = Counter()  # per user, in this worker process
# More events than any task writes. The bound keeps `after` a number the store can take
# (SQLite refuses integers past 2**63) and the skip's reads finite.
AFTER_MAX = 10_000_000
AFTER_DIGITS = len(str(AFTER_MAX))


def parse_after(raw: str) -> int | None:
    """`after` as given in the query string: a whole number 0..AFTER_MAX, else None."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > AFTER_DIGITS:
        return None
    value = int(raw)
    return value if value <= AFTER_MAX else None


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
        self.queues: set[Queue] = set()
        self.poller = asyncio.create_task(self._poll())

    @classmethod
    def subscribe(cls, store: WorkflowStore, task_id: int, cursor: int, maxsize: int) -> Queue:
        """A queue that receives every batch read after this call (no await: atomic in the loop);
        at most `maxsize` batches wait in it, then it gets OVERFLOW and nothing more."""
        feed = cls.feeds.get(task_id)
        if feed is None or feed.poller.done():
            feed = cls.feeds[task_id] = cls(store, task_id, cursor)
        queue: Queue = asyncio.Queue(maxsize + 1)  # + room for OVERFLOW/CLOSE
        feed.queues.add(queue)
        return queue

    @classmethod
    def unsubscribe(cls, task_id: int, queue: Queue) -> None:
        feed = cls.feeds.get(task_id)
        if feed is not None:
            feed.queues.discard(queue)

    def _publish(self, item: Batch | None) -> None:
        for queue in list(self.queues):
            if queue.qsize() >= queue.maxsize - 1 and item is not CLOSE:
                self.queues.discard(queue)  # a stalled client must not grow the server's memory
                queue.put_nowait(OVERFLOW)
            else:
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


async def _send_history(
    websocket: WebSocket, store: WorkflowStore, task_id: int, cursor: int
) -> tuple[int, int]:
    """Send every event after `cursor`; returns the new cursor and how many were sent."""
    sent = 0
    while events := await asyncio.to_thread(store.logs_after, task_id, cursor, BATCH):
        for _, text in _encode(events):
            await websocket.send_text(text)
        cursor = events[-1]["id"]
        sent += len(events)
    return cursor, sent


async def _skip(store: WorkflowStore, task_id: int, count: int) -> tuple[int, int]:
    """Pass over the first `count` events, a batch at a time; returns the cursor and how many."""
    cursor = skipped = 0
    while skipped < count:
        events = await asyncio.to_thread(store.logs_after, task_id, cursor, min(BATCH, count - skipped))
        if not events:
            break
        cursor = events[-1]["id"]
        skipped += len(events)
    return cursor, skipped


async def _until_disconnect(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


def _without_token(websocket: WebSocket) -> None:
    """Drop `token` from the query string uvicorn logs (the scope is the one it logs from)."""
    query = websocket.scope.get("query_string", b"").decode("latin-1")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "token"]
    websocket.scope["query_string"] = urlencode(kept).encode("latin-1")


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    # accept first so the client sees the close code (closing a handshake is a bare 403)
    await websocket.accept()
    await websocket.close(code=code, reason=reason)


@router.websocket("/tasks/{task_id}/logs")
async def task_logs(websocket: WebSocket, task_id: int, after: str = "0") -> None:
    # `after` is read by hand: a FastAPI validation error would refuse the handshake (a bare
    # 403), and the client would never see why
    origin = foreign_origin(websocket.scope)
    found = await security.websocket_user(websocket)
    _without_token(websocket)
    if origin is not None:
        await _close(websocket, 1008, f"cross-site WebSocket refused (Origin {origin} is not this server)")
        return
    if found is None:
        await _close(websocket, 1008, "authentication required: _token cookie or token query parameter")
        return
    user, claims = found
    store = get_store()
    try:
        task = await asyncio.to_thread(store.get_task, task_id, with_steps=False)
    except NotFound:
        await _close(websocket, 4404, f"task {task_id} does not exist")
        return
    dag_id = security.server_dag_id(task["server"])
    if not await asyncio.to_thread(security.is_authorized, user, "GET", dag_id):
        await _close(websocket, 1008, f"you may not read DAG {dag_id}")
        return
    skip = parse_after(after)
    if skip is None:
        await _close(
            websocket, 1008, f"after must be a whole number from 0 to {AFTER_MAX} (events already received)"
        )
        return
    cfg = get_config().api
    name = security.user_name(user)
    if open_sockets[name] >= cfg.max_websockets_per_user:
        await _close(
            websocket,
            1013,
            f"{name} has {open_sockets[name]} log connections open (api.max_websockets_per_user)",
        )
        return
    open_sockets[name] += 1
    try:
        await websocket.accept()
        await _stream(websocket, store, task_id, skip, claims.get("exp"), cfg.websocket_queue_batches)
    finally:
        open_sockets[name] -= 1
        if open_sockets[name] <= 0:
            del open_sockets[name]


async def _expiry(exp: Any) -> None:
    if not isinstance(exp, (int, float)):
        await asyncio.Event().wait()  # a token without expiry: never
    await asyncio.sleep(max(0.0, float(exp) - time.time()))


async def _stream(
    websocket: WebSocket, store: WorkflowStore, task_id: int, after: int, exp: Any, queue_batches: int
) -> None:
    # delivered: events the client has (skipped by `after` or sent), its resume point
    cursor, delivered = await _skip(store, task_id, after)
    queue: Queue | None = None
    disconnected = asyncio.create_task(_until_disconnect(websocket))
    expired = asyncio.create_task(_expiry(exp))
    try:
        cursor, sent = await _send_history(websocket, store, task_id, cursor)
        queue = TaskFeed.subscribe(store, task_id, cursor, queue_batches)
        cursor, more = await _send_history(websocket, store, task_id, cursor)  # written meanwhile
        delivered += sent + more
        while True:
            getter = asyncio.create_task(queue.get())
            await asyncio.wait({getter, disconnected, expired}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                if expired.done() and not disconnected.done():
                    await websocket.close(code=4401, reason="token expired; reconnect with a new one")
                return
            batch = getter.result()
            if batch is CLOSE:
                await websocket.close(code=1000)
                return
            if batch is OVERFLOW:
                await websocket.close(code=1013, reason=f"client too slow; reconnect with after={delivered}")
                return
            for event_id, text in batch:
                if event_id > cursor:
                    await websocket.send_text(text)
                    cursor = event_id
                    delivered += 1
    except WebSocketDisconnect:
        return
    finally:
        for waiter in (disconnected, expired):
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await waiter
        if queue is not None:
            TaskFeed.unsubscribe(task_id, queue)
