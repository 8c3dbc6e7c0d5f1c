"""WS /tasks/{id}/logs: the task's past log events, then new ones as they are written.

Messages are exactly the seed's ``{task_id, step, message, level, timestamp}``. ``after=N``
(additive) skips the first N events, so a client that reconnects resumes without gaps or
duplicates. The socket closes with 1000 once the task is final and its last event is sent;
1008 without a valid token, 4404 for an unknown task.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from fuxictr_workflow.api.security import websocket_user
from fuxictr_workflow.stages import FINAL_TASK_STATUSES
from fuxictr_workflow.store import NotFound, get_store, iso

router = APIRouter(tags=["Logs"])

POLL_S = 0.1
FINAL_GRACE_S = 0.5
BATCH = 1000


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
    final_seen = False
    if after > 0:
        skipped = await asyncio.to_thread(store.logs_after, task_id, 0, after)
        cursor = skipped[-1]["id"] if skipped else 0
    try:
        while True:
            # read the status first: events written before it became final are all sent
            status = (await asyncio.to_thread(store.get_task, task_id, with_steps=False))["status"]
            while events := await asyncio.to_thread(store.logs_after, task_id, cursor, BATCH):
                for event in events:
                    await websocket.send_json(
                        {
                            "task_id": event["task_id"],
                            "step": event["step"],
                            "message": event["message"],
                            "level": event["level"],
                            "timestamp": iso(event["timestamp"]),
                        }
                    )
                cursor = events[-1]["id"]
            if status in FINAL_TASK_STATUSES:
                if final_seen:
                    await websocket.close(code=1000)
                    return
                final_seen = True  # one more drain: a writer may log right after the final state
                await asyncio.sleep(FINAL_GRACE_S)
                continue
            await asyncio.sleep(POLL_S)
    except WebSocketDisconnect:
        return
