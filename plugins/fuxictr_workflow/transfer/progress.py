"""Progress of a running transfer, reported every `progress_interval_s` by a ticker thread.

A ticker (not the workers) reports so that a stalled transfer still says so on time, and
reporting never slows the data path.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MB = 1_000_000


@dataclass(frozen=True)
class Progress:
    bytes_done: int  # verified this run + skipped (already verified earlier)
    bytes_total: int
    bytes_sent: int  # moved over the wire this run (re-sends included)
    chunks_done: int
    chunks_total: int
    elapsed_s: float

    @property
    def percent(self) -> float:
        return 100.0 if self.bytes_total == 0 else 100.0 * self.bytes_done / self.bytes_total

    @property
    def mb_per_s(self) -> float:
        return self.bytes_sent / MB / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        rate = self.bytes_sent / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (self.bytes_total - self.bytes_done) / rate if rate > 0 else None

    def line(self) -> str:
        eta = "?" if self.eta_s is None else f"{self.eta_s:.0f}s"
        return (
            f"{self.percent:5.1f}% {self.bytes_done / MB:,.1f}/{self.bytes_total / MB:,.1f} MB, "
            f"{self.mb_per_s:.1f} MB/s, ETA {eta}, chunks {self.chunks_done}/{self.chunks_total}"
        )


class ProgressTracker:
    """Thread-safe counters plus the ticker that hands snapshots to `callback`."""

    def __init__(
        self,
        bytes_total: int,
        chunks_total: int,
        callback: Callable[[Progress], None] | None,
        interval_s: float,
    ) -> None:
        self.bytes_total = bytes_total
        self.chunks_total = chunks_total
        self.callback = callback
        self.interval_s = interval_s
        self.bytes_done = 0
        self.bytes_sent = 0
        self.chunks_done = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def done(self, nbytes: int, *, sent: bool) -> None:
        with self._lock:
            self.bytes_done += nbytes
            self.chunks_done += 1
            if sent:
                self.bytes_sent += nbytes

    def resent(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_sent += nbytes

    def snapshot(self) -> Progress:
        with self._lock:
            return Progress(
                bytes_done=self.bytes_done,
                bytes_total=self.bytes_total,
                bytes_sent=self.bytes_sent,
                chunks_done=self.chunks_done,
                chunks_total=self.chunks_total,
                elapsed_s=time.monotonic() - self.started,
            )

    def _tick(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._report()

    def _report(self) -> None:
        if self.callback is not None:
            with contextlib.suppress(Exception):  # a failing progress sink must not fail the transfer
                self.callback(self.snapshot())

    def start(self) -> None:
        self.started = time.monotonic()
        if self.callback is not None:
            self._thread = threading.Thread(target=self._tick, name="transfer-progress", daemon=True)
            self._thread.start()

    def stop(self, *, final: bool) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if final:
            self._report()
