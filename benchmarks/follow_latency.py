"""How long a line the runner writes takes to reach the workflow log and a WebSocket viewer.

Measured from outside the product, on the same clock: the training server of the embedded
stack is this machine, so a watcher reads the job's log file on disk every 10 ms and notes
when each line appears there (the runner flushes every line as it prints it). Each line is
then found in the workflow store (its row's timestamp) and among the messages a WebSocket
client received (the time it arrived), matched by the text the product makes of that line
(:class:`RunnerOutput` itself, so the match follows the product's own formatting).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fuxictr_workflow.ssh.runner_job import RunnerOutput

WATCH_INTERVAL_S = 0.01


class JobLogWatcher(threading.Thread):
    """Notes when each line of the first file matching `pattern` under `root` appears."""

    def __init__(self, root: Path, pattern: str) -> None:
        super().__init__(daemon=True)
        self.root, self.pattern = root, pattern
        self.lines: list[tuple[float, str]] = []
        self.done = threading.Event()

    def run(self) -> None:
        path = None
        while path is None and not self.done.is_set():
            path = next(iter(self.root.glob(self.pattern)), None)
            time.sleep(WATCH_INTERVAL_S)
        if path is None:
            return
        pending, offset = b"", 0
        while True:
            final = self.done.is_set()  # read once more after the end was announced
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            seen = time.time()
            offset += len(data)
            *complete, pending = (pending + data).split(b"\n")
            self.lines += [(seen, line.decode("utf-8", "replace")) for line in complete]
            if final:
                return
            time.sleep(WATCH_INTERVAL_S)


class WebSocketRecorder(threading.Thread):
    """Notes when each message of one task's log WebSocket arrives, until the server closes it."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.messages: list[tuple[float, dict[str, Any]]] = []

    def run(self) -> None:
        asyncio.run(self._record())

    async def _record(self) -> None:
        import websockets

        async with websockets.connect(self.url, open_timeout=30, max_size=None) as ws:
            async for raw in ws:
                self.messages.append((time.time(), json.loads(raw)))


def _delays(written: list[tuple[float, str]], arrived: list[tuple[float, str]]) -> list[float]:
    """For each written line, the delay to the first not yet matched arrival of its text."""
    delays, used = [], [False] * len(arrived)
    for at, text in written:
        for i, (then, message) in enumerate(arrived):
            if not used[i] and message == text:
                used[i] = True
                delays.append(max(0.0, then - at))
                break
    return delays


def latencies(
    stage: str,
    command: str,
    lines: list[tuple[float, str]],
    store_events: list[dict[str, Any]],
    ws_messages: list[tuple[float, dict[str, Any]]],
) -> dict[str, Any]:
    """Delays from the job's log file to the store and to the WebSocket, summarised."""
    output, written = RunnerOutput(command), []
    for at, line in lines:
        said = output.read(line)
        if said is not None:
            written.append((at, said[1]))
    stored = [(_epoch(e["timestamp"]), e["message"]) for e in store_events if e["step"] == stage]
    streamed = [(at, m["message"]) for at, m in ws_messages if m.get("step") == stage]
    to_store, to_ws = _delays(written, stored), _delays(written, streamed)
    return {
        "lines_written": len(written),
        "lines_in_log": len(to_store),
        "lines_on_websocket": len(to_ws),
        **_summary("log", to_store),
        **_summary("ws", to_ws),
    }


def _epoch(value: Any) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:  # the store keeps UTC without an offset
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _summary(prefix: str, delays: list[float]) -> dict[str, float | None]:
    if not delays:
        return {f"{prefix}_latency_p50_s": None, f"{prefix}_latency_max_s": None}
    return {
        f"{prefix}_latency_p50_s": round(statistics.median(delays), 3),
        f"{prefix}_latency_max_s": round(max(delays), 3),
    }
