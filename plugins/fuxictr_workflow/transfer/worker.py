"""The worker loop: `streams` threads move the pending chunks, each over its own session.

A chunk whose hashes differ, or whose session was lost, is retried with backoff up to
max_retries; any other error stops every worker and fails the transfer.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from concurrent.futures import Future

from fuxictr_workflow.domain.stages import ChunkStatus
from fuxictr_workflow.transfer import agent
from fuxictr_workflow.transfer.channel import AgentClient
from fuxictr_workflow.transfer.chunk_io import Buffers, ChunkIO
from fuxictr_workflow.transfer.errors import ConnectionLost, TransferError
from fuxictr_workflow.transfer.params import TransferParams
from fuxictr_workflow.transfer.progress import ProgressTracker
from fuxictr_workflow.transfer.resume import Job
from fuxictr_workflow.transfer.sessions import SessionPool

# A chunk moved, waiting for its verdict: (job, sender's hash, destination's hash or its future)
_Moved = tuple[Job, str | None, str | None | Future[str]]


def _next(jobs: queue.SimpleQueue[Job]) -> Job | None:
    try:
        return jobs.get_nowait()
    except queue.Empty:
        return None


class ChunkMover:
    """The workers of one run, their shared counters and the first error that stops them."""

    def __init__(self, params: TransferParams, pool: SessionPool, tracker: ProgressTracker) -> None:
        self.params = params
        self.pool = pool
        self.tracker = tracker
        self.io = ChunkIO(params)
        self.stop = threading.Event()
        self.error: TransferError | None = None
        self.lock = threading.Lock()
        self.chunks_sent = 0
        self.chunks_retried = 0

    def move(self, jobs: list[Job], workers: int, first: AgentClient | None) -> None:
        """Run `workers` threads until every job is verified or the transfer stops (then
        :attr:`error` says why). Worker 0 starts on `first`, the others on spare sessions."""
        todo: queue.SimpleQueue[Job] = queue.SimpleQueue()
        for job in jobs:
            todo.put(job)
        threads = [
            threading.Thread(
                target=self.worker, args=(todo, first if i == 0 else None), name=f"transfer-{i}", daemon=True
            )
            for i in range(workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def fail(self, err: TransferError) -> None:
        with self.lock:
            if self.error is None:
                self.error = err
        self.stop.set()

    def worker(self, jobs: queue.SimpleQueue[Job], client: AgentClient | None) -> None:
        """Move chunks over one session, up to pipeline_depth of them in flight.

        The next chunk's request (and, uploading, its bytes) goes out before the current
        one's replies are read, so the agent does not idle while this side hashes, records
        the chunk or sends the next request. A lost session fails every chunk in flight
        (each retried with backoff); an agent-side error fails the transfer.
        """
        p = self.params
        if client is None:
            client = self.pool.take_spare()
        depth = p.pipeline_depth
        buf = Buffers.new()
        fds = agent.FdCache(os.O_RDONLY if p.upload else os.O_RDWR)
        window: deque[tuple[Job, str | None]] = deque()  # requests sent, replies not read yet
        moved: deque[_Moved] = deque()  # bytes at the destination, verdict pending
        retry: deque[Job] = deque()
        try:
            while not self.stop.is_set():
                if p.cancelled():
                    self.fail(TransferError("the transfer was cancelled", retryable=False))
                    return
                job: Job | None = None  # being started, not in the window yet
                sent = False
                try:
                    while len(window) < depth:
                        job = retry.popleft() if retry else _next(jobs)
                        if job is None:
                            break
                        if client is None:
                            client = self.pool.session()
                        sent = True
                        window.append((job, self.io.start(client, job, buf, fds)))
                        job, sent = None, False
                    if not window:
                        if moved and self.judge(moved, retry, wait=True):
                            continue  # a chunk to re-send, or more to judge
                        return
                    head, sent_hash = window[0]
                    moved.append((head, *self.io.finish(client, head, sent_hash, buf, fds)))
                    window.popleft()
                except ConnectionLost as err:
                    if client is not None:
                        client.close()
                        client = None
                    lost = [(j, True) for j, _ in window] + ([(job, sent)] if job is not None else [])
                    window.clear()
                    for i, (j, was_sent) in enumerate(lost):  # one backoff wait for them all
                        if not self.retry_later(j, str(err), was_sent, wait=i == len(lost) - 1):
                            return
                        retry.append(j)
                    continue
                except TransferError:
                    failed = job if job is not None else window[0][0] if window else None
                    if failed is not None:
                        p.store.mark_chunk(
                            p.task_id, p.step, failed.chunk.chunk_id, ChunkStatus.FAILED, sent=True
                        )
                    raise
                # the newest chunk's read-back hash may run on while the next one arrives
                if not self.judge(moved, retry, wait=len(moved) > 1 or not window):
                    return
        except TransferError as err:
            self.fail(err)
        except Exception as err:  # a bug must still stop the other workers and surface
            self.fail(TransferError(f"{type(err).__name__}: {err}", retryable=False))
        finally:
            buf.hashing.shutdown(wait=True)  # no hash may read a file descriptor closed below
            fds.close()
            if client is not None:
                if window:  # replies still due: nobody else can use this session
                    client.close()
                else:
                    self.pool.give_back(client)

    def judge(self, moved: deque[_Moved], retry: deque[Job], wait: bool) -> bool:
        """Record the verdict of moved chunks, oldest first: all whose destination hash is
        known, and with `wait` at least the oldest. A mismatch goes to `retry` after its
        backoff. False when the transfer is stopping."""
        while moved:
            job, src_hash, dst = moved[0]
            if isinstance(dst, Future):
                if not (wait or dst.done()):
                    return True
                try:
                    dst = dst.result()
                except OSError as err:
                    raise TransferError(
                        f"cannot read {job.file.part}: {err.strerror}", retryable=False
                    ) from None
            moved.popleft()
            wait = False
            if src_hash == dst:
                self.chunk_done(job, src_hash)
                continue
            reason = (
                f"checksum mismatch at the destination (sent {str(src_hash)[:12]}…, stored {str(dst)[:12]}…)"
            )
            if not self.retry_later(job, reason, True):
                return False
            retry.append(job)
        return True

    def chunk_done(self, job: Job, checksum: str | None) -> None:
        p, chunk = self.params, job.chunk
        p.store.mark_chunk(
            p.task_id,
            p.step,
            chunk.chunk_id,
            ChunkStatus.VERIFIED if p.cfg.verify_checksum else ChunkStatus.SENT,
            checksum=checksum,
            sent=True,
            retried=job.resend and job.attempt == 0,
        )
        with self.lock:
            self.chunks_sent += 1
        self.tracker.done(chunk.size, sent=True)
        if p.hooks.after_verify is not None:
            p.hooks.after_verify(chunk)

    def retry_later(self, job: Job, reason: str, sent: bool, wait: bool = True) -> bool:
        """Record a failed attempt, then wait the backoff; False when the transfer is stopping.

        Raises TransferError once the chunk has used up max_retries."""
        p = self.params
        chunk, retries = job.chunk, p.cfg.max_retries
        last = job.attempt == retries
        p.store.mark_chunk(
            p.task_id,
            p.step,
            chunk.chunk_id,
            ChunkStatus.FAILED,
            sent=sent,
            retried=not last or (job.resend and job.attempt == 0),
        )
        if last:
            raise TransferError(
                f"chunk {chunk.chunk_id} of {job.file.source} failed after {retries + 1} attempts: {reason}"
            )
        delay = p.backoff(job.attempt)
        job.attempt += 1
        with self.lock:
            self.chunks_retried += 1
        p.log.warning(f"chunk {chunk.chunk_id}: {reason}; retry {job.attempt}/{retries} in {delay:.1f}s")
        return not self.stop.wait(delay if wait else 0)
