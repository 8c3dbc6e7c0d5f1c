"""The chunked, parallel, verified, resumable transfer: :func:`upload` and :func:`download`.

One run: check paths (before connecting) → connect → list the source files → cut them
into chunks and record them in ``transfer_chunks`` (keeping verified ones: resume) →
`parallel_workers` sessions move the pending chunks into ``<dest>.part`` → each chunk's
sha256 is computed by the sender while streaming and by the destination from what it
stored; a mismatch or a lost session retries that chunk with backoff → when every chunk
of every file is verified, each part is fsynced and renamed to its final name.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from fuxictr_workflow.config import TransferConfig
from fuxictr_workflow.servers import HOST_KEY_WARNING, Endpoint
from fuxictr_workflow.stages import ChunkStatus
from fuxictr_workflow.store import ChunkSpec, WorkflowStore
from fuxictr_workflow.transfer import agent
from fuxictr_workflow.transfer.channel import AgentClient, Connection, open_connection, pick_transport
from fuxictr_workflow.transfer.errors import ConnectionLost, TransferError
from fuxictr_workflow.transfer.plan import (
    FilePlan,
    TransferItem,
    check_local,
    check_remote,
    join,
    plan_file,
    relative_to,
)
from fuxictr_workflow.transfer.progress import MB, Progress, ProgressTracker

_py_log = logging.getLogger("fuxictr_workflow.transfer")

# Chunks in flight per session: 2 keeps the agent busy with the next chunk while this
# side verifies and records the current one; more only adds memory in the pipes.
PIPELINE_DEPTH = 2


def stream_count(configured: int, host: str) -> int:
    """Parallel sessions worth opening to `host`: `configured`, except on loopback.

    Between two hosts a stream is bounded by one channel's window / RTT, so parallel
    sessions add throughput. On loopback every stream's ssh, sshd, agent and worker share
    this machine's CPUs (one stream keeps about two busy), and more streams only add
    context switches, shell start-ups and lock contention on the destination file:
    measured here (2 CPUs), 1 stream beat 2 and 4.
    """
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return configured
    return max(1, min(configured, (os.cpu_count() or 1) // 2))


class Log(Protocol):
    def info(self, message: str) -> None: ...
    def warning(self, message: str) -> None: ...


class _PyLog:
    def info(self, message: str) -> None:
        _py_log.info(message)

    def warning(self, message: str) -> None:
        _py_log.warning(message)


@dataclass
class TransferHooks:
    """Seams for fault tests, called at real points of the data path.

    after_write(chunk, part_path): the chunk's bytes are in the destination part file and
    its hash has not been taken yet. after_verify(chunk): the chunk is recorded verified.
    """

    after_write: Callable[[ChunkSpec, str], None] | None = None
    after_verify: Callable[[ChunkSpec], None] | None = None


@dataclass
class TransferResult:
    direction: str
    files: int
    bytes: int
    bytes_sent: int
    seconds: float
    mb_per_s: float
    chunks_total: int
    chunks_sent: int
    chunks_skipped: int
    chunks_retried: int
    workers: int
    transport: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the two sides' file operations (same agent functions; remote ones over SSH) --


class _LocalFiles:
    remote = False

    def _do(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except agent.AgentError as err:
            raise TransferError(f"local: {err}", retryable=False) from None

    def list(self, path: str) -> list[list[Any]]:
        return self._do(agent.list_files, path)

    def stat(self, paths: list[str]) -> list[int | None]:
        return self._do(agent.stat_sizes, paths)

    def create(self, parts: list[list[Any]], dirs: list[str]) -> None:
        self._do(agent.create_parts, parts, dirs)

    def commit(self, pairs: list[list[str]]) -> None:
        self._do(agent.commit_parts, pairs)

    def prune(self, path: str, keep: list[str]) -> list[str]:
        return self._do(agent.prune_files, path, keep)


class _RemoteFiles:
    """Control requests on one session, reconnecting (with the retry schedule) when it drops."""

    remote = True

    def __init__(self, connect: Callable[[], AgentClient], client: AgentClient | None) -> None:
        self.connect = connect
        self.client = client

    def _call(self, req: dict[str, Any]) -> dict[str, Any]:
        for _ in range(2):
            if self.client is None:
                self.client = self.connect()
            try:
                return self.client.call(req)
            except ConnectionLost:
                self.client.close()
                self.client = None
        self.client = self.connect()
        return self.client.call(req)

    def list(self, path: str) -> list[list[Any]]:
        return self._call({"op": "list", "path": path})["files"]

    def stat(self, paths: list[str]) -> list[int | None]:
        return self._call({"op": "stat", "paths": paths})["sizes"]

    def create(self, parts: list[list[Any]], dirs: list[str]) -> None:
        self._call({"op": "create", "parts": parts, "dirs": dirs})

    def commit(self, pairs: list[list[str]]) -> None:
        self._call({"op": "commit", "pairs": pairs})

    def prune(self, path: str, keep: list[str]) -> list[str]:
        return self._call({"op": "prune", "path": path, "keep": keep})["deleted"]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class _Connector:
    """The transfer's one SSH connection, re-made (by one thread, others wait) when it drops."""

    def __init__(self, endpoint: Endpoint, transport: str) -> None:
        self.endpoint = endpoint
        self.transport = transport
        self.lock = threading.Lock()
        self.conn: Connection | None = None

    def session(self) -> AgentClient:
        with self.lock:
            if self.conn is not None and not self.conn.alive():
                self.conn.close()
                self.conn = None
            if self.conn is None:
                self.conn = open_connection(self.endpoint, self.transport)
            conn = self.conn
        return AgentClient.start(conn, self.endpoint)

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None


@dataclass
class _Job:
    file: FilePlan
    chunk: ChunkSpec
    resend: bool = False  # it failed on an earlier attempt: sending it again is a retry
    attempt: int = 0  # failed attempts in this run


@dataclass
class _Buffers:
    """One worker's memory: two piece buffers used in turn (one being hashed while the other
    is filled), one for read-back hashes, and the helper thread that hashes."""

    pieces: tuple[bytearray, bytearray]
    readback: bytearray
    hashing: ThreadPoolExecutor

    @classmethod
    def new(cls) -> _Buffers:
        return cls(
            (bytearray(agent.PIECE), bytearray(agent.PIECE)), bytearray(agent.PIECE), ThreadPoolExecutor(1)
        )


# A chunk moved, waiting for its verdict: (job, sender's hash, destination's hash or its future)
_Moved = tuple[_Job, str | None, str | None | Future[str]]


def _next(jobs: queue.SimpleQueue[_Job]) -> _Job | None:
    try:
        return jobs.get_nowait()
    except queue.Empty:
        return None


class _Transfer:
    def __init__(
        self,
        direction: str,
        endpoint: Endpoint,
        cfg: TransferConfig,
        store: WorkflowStore,
        task_id: int,
        step: str,
        log: Log,
        progress: Callable[[Progress], None] | None,
        hooks: TransferHooks,
        transport: str,
        cancelled: Callable[[], bool] | None,
        streams: int | None = None,
    ) -> None:
        self.upload = direction == "upload"
        self.direction = direction
        self.endpoint = endpoint
        self.cfg = cfg
        self.store = store
        self.task_id = task_id
        self.step = step
        self.log = log
        self.progress_cb = progress
        self.hooks = hooks
        self.transport = pick_transport(transport, endpoint)
        self.cancelled = cancelled or (lambda: False)
        self.streams = streams or stream_count(cfg.parallel_workers, endpoint.host)
        self.done_status = (
            {ChunkStatus.VERIFIED} if cfg.verify_checksum else {ChunkStatus.VERIFIED, ChunkStatus.SENT}
        )
        self.stop = threading.Event()
        self.error: TransferError | None = None
        self.lock = threading.Lock()
        self.chunks_sent = 0
        self.chunks_retried = 0
        self.returned: list[AgentClient] = []
        self.connector = _Connector(endpoint, self.transport)
        self.spare: queue.SimpleQueue[AgentClient | None] = queue.SimpleQueue()
        self.prefetching: list[threading.Thread] = []
        self.spares_left = 0
        self.chunks_skipped = 0
        self.bytes_skipped = 0

    # -- connections --

    def backoff(self, attempt: int) -> float:
        return self.cfg.retry_backoff_s * (2**attempt)

    def connect(self) -> AgentClient:
        """A new agent session, retried up to max_retries with backoff."""
        attempts = self.cfg.max_retries + 1
        for attempt in range(attempts):
            try:
                return self.connector.session()
            except ConnectionLost as err:
                last = err
            if attempt + 1 < attempts:
                delay = self.backoff(attempt)
                self.log.warning(f"{last}; retry {attempt + 1}/{self.cfg.max_retries} in {delay:.1f}s")
                time.sleep(delay)
        raise TransferError(f"{last} (gave up after {attempts} attempts)")

    # -- planning and resume --

    def plan(
        self, src_side: Any, pairs: list[tuple[str, str]], dest_root: str
    ) -> tuple[list[FilePlan], list[str]]:
        files: list[FilePlan] = []
        empty_dirs: list[str] = []
        for src, dst in pairs:
            listed = src_side.list(src)
            if not listed:
                empty_dirs.append(dst)
            for rel, size, mtime_ns in listed:
                dest = join(dst, rel, remote=self.upload)
                files.append(
                    plan_file(
                        relative_to(dest, dest_root, remote=self.upload),
                        join(src, rel, remote=not self.upload),
                        dest,
                        size,
                        mtime_ns,
                        self.cfg.chunk_size,
                    )
                )
        seen: set[str] = set()
        for f in files:
            if f.dest in seen:
                raise TransferError(f"two sources go to the same destination {f.dest}", retryable=False)
            seen.add(f.dest)
        return files, empty_dirs

    def resume(
        self, files: list[FilePlan], dst_side: Any
    ) -> tuple[list[_Job], list[FilePlan], list[FilePlan]]:
        """Pending chunks, files whose part must be (re)created, files to commit at the end."""
        before = {r["chunk_id"]: r for r in self.store.chunks(self.task_id, self.step)}
        for f in files:
            if any(c.chunk_id in before and before[c.chunk_id]["source_sig"] != f.sig for c in f.chunks):
                self.log.warning(
                    f"source {f.source} changed since the last attempt (size/mtime); starting it over"
                )
        specs = [c for f in files for c in f.chunks]
        rows = {r["chunk_id"]: r for r in self.store.register_chunks(self.task_id, self.step, specs)}
        self.store.forget_chunks(self.task_id, self.step, list(rows))  # e.g. a file that shrank
        sizes = dst_side.stat([p for f in files for p in (f.dest, f.part)]) if files else []
        jobs: list[_Job] = []
        create: list[FilePlan] = []
        commit: list[FilePlan] = []
        for i, f in enumerate(files):
            dest_size, part_size = sizes[2 * i], sizes[2 * i + 1]
            done = [c for c in f.chunks if rows[c.chunk_id]["status"] in self.done_status]
            if len(done) == len(f.chunks) and dest_size == f.size and part_size is None:
                pending: list[ChunkSpec] = []  # finished on an earlier attempt
            elif done and part_size == f.size:
                done_ids = {c.chunk_id for c in done}
                pending = [c for c in f.chunks if c.chunk_id not in done_ids]
                commit.append(f)
            else:
                if done:
                    self.log.warning(
                        f"{f.part} is missing at the destination; re-sending its {len(done)} verified chunks"
                    )
                    for c in done:
                        self.store.mark_chunk(self.task_id, self.step, c.chunk_id, ChunkStatus.PENDING)
                    done = []
                pending = list(f.chunks)
                create.append(f)
                commit.append(f)
            self.chunks_skipped += len(done)
            self.bytes_skipped += sum(c.size for c in done)
            jobs += [_Job(f, c, rows[c.chunk_id]["status"] == ChunkStatus.FAILED) for c in pending]
        return jobs, create, commit

    # -- workers --

    def fail(self, err: TransferError) -> None:
        with self.lock:
            if self.error is None:
                self.error = err
        self.stop.set()

    def prefetch(self, n: int) -> None:
        def one() -> None:
            try:
                self.spare.put(self.connector.session())
            except TransferError:
                self.spare.put(None)  # the worker will connect (and retry) itself

        self.spares_left = n
        self.prefetching = [threading.Thread(target=one, daemon=True) for _ in range(n)]
        for t in self.prefetching:
            t.start()

    def take_spare(self) -> AgentClient | None:
        with self.lock:
            if self.spares_left == 0:
                return None
            self.spares_left -= 1
        return self.spare.get()

    def worker(self, jobs: queue.SimpleQueue[_Job], client: AgentClient | None) -> None:
        """Move chunks over one session, up to PIPELINE_DEPTH of them in flight.

        The next chunk's request (and, uploading, its bytes) goes out before the current
        one's replies are read, so the agent does not idle while this side hashes, records
        the chunk or sends the next request. A lost session fails every chunk in flight
        (each retried with backoff); an agent-side error fails the transfer.
        """
        if client is None:
            client = self.take_spare()
        # the after_write seam needs the destination quiet between a chunk's write and hash
        depth = 1 if self.upload and self.hooks.after_write is not None else PIPELINE_DEPTH
        buf = _Buffers.new()
        fds = agent.FdCache(os.O_RDONLY if self.upload else os.O_RDWR)
        window: deque[tuple[_Job, str | None]] = deque()  # requests sent, replies not read yet
        moved: deque[_Moved] = deque()  # bytes at the destination, verdict pending
        retry: deque[_Job] = deque()
        try:
            while not self.stop.is_set():
                if self.cancelled():
                    self.fail(TransferError("the transfer was cancelled", retryable=False))
                    return
                job: _Job | None = None  # being started, not in the window yet
                sent = False
                try:
                    while len(window) < depth:
                        job = retry.popleft() if retry else _next(jobs)
                        if job is None:
                            break
                        if client is None:
                            client = self.connector.session()
                        sent = True
                        window.append((job, self.start_chunk(client, job, buf, fds)))
                        job, sent = None, False
                    if not window:
                        if moved and self.judge(moved, retry, wait=True):
                            continue  # a chunk to re-send, or more to judge
                        return
                    head, sent_hash = window[0]
                    moved.append((head, *self.finish_chunk(client, head, sent_hash, buf, fds)))
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
                        self.store.mark_chunk(
                            self.task_id, self.step, failed.chunk.chunk_id, ChunkStatus.FAILED, sent=True
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
                    with self.lock:
                        self.returned.append(client)

    def judge(self, moved: deque[_Moved], retry: deque[_Job], wait: bool) -> bool:
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

    def chunk_done(self, job: _Job, checksum: str | None) -> None:
        chunk = job.chunk
        self.store.mark_chunk(
            self.task_id,
            self.step,
            chunk.chunk_id,
            ChunkStatus.VERIFIED if self.cfg.verify_checksum else ChunkStatus.SENT,
            checksum=checksum,
            sent=True,
            retried=job.resend and job.attempt == 0,
        )
        with self.lock:
            self.chunks_sent += 1
        self.tracker.done(chunk.size, sent=True)
        if self.hooks.after_verify is not None:
            self.hooks.after_verify(chunk)

    def retry_later(self, job: _Job, reason: str, sent: bool, wait: bool = True) -> bool:
        """Record a failed attempt, then wait the backoff; False when the transfer is stopping.

        Raises TransferError once the chunk has used up max_retries."""
        chunk, retries = job.chunk, self.cfg.max_retries
        last = job.attempt == retries
        self.store.mark_chunk(
            self.task_id,
            self.step,
            chunk.chunk_id,
            ChunkStatus.FAILED,
            sent=sent,
            retried=not last or (job.resend and job.attempt == 0),
        )
        if last:
            raise TransferError(
                f"chunk {chunk.chunk_id} of {job.file.source} failed after {retries + 1} attempts: {reason}"
            )
        delay = self.backoff(job.attempt)
        job.attempt += 1
        with self.lock:
            self.chunks_retried += 1
        self.log.warning(f"chunk {chunk.chunk_id}: {reason}; retry {job.attempt}/{retries} in {delay:.1f}s")
        return not self.stop.wait(delay if wait else 0)

    def start_chunk(self, client: AgentClient, job: _Job, buf: _Buffers, fds: agent.FdCache) -> str | None:
        """Send a chunk's request; uploading, also its bytes (hashed on the way: the sender's
        hash, returned) and the request to hash the region as the agent stored it."""
        f, c = job.file, job.chunk
        verify = self.cfg.verify_checksum
        if not self.upload:
            client.send_request(
                {"op": "read", "path": f.source, "off": c.offset, "size": c.size, "hash": verify}
            )
            return None
        try:
            fd = fds.get(f.source)
        except OSError as err:
            raise TransferError(f"cannot read {f.source}: {err.strerror}", retryable=False) from None
        write = {"op": "write", "path": f.part, "off": c.offset, "size": c.size, "settle": not verify}
        client.send_request(write)
        h = agent.PieceHasher(buf.hashing) if verify else None
        sent = 0
        for piece in agent.read_pieces(fd, c.offset, c.size, buf.pieces):
            if h is not None:
                h.update(piece)  # hashed while it is sent
            client.send(piece)
            sent += len(piece)
        if sent < c.size:
            raise TransferError(f"{f.source} shrank while being sent; run the stage again to start it over")
        if h is None:
            return None
        if self.hooks.after_write is None:  # pipelined: no round trip between write and hash
            client.send_request(self.hash_request(job))
        return h.hexdigest()

    def hash_request(self, job: _Job) -> dict[str, Any]:
        return {"op": "hash", "path": job.file.part, "off": job.chunk.offset, "size": job.chunk.size}

    def finish_chunk(
        self, client: AgentClient, job: _Job, sent_hash: str | None, buf: _Buffers, fds: agent.FdCache
    ) -> tuple[str | None, str | None | Future[str]]:
        """Read a chunk's replies: (sender's hash, destination's hash of the chunk as stored).

        Downloading, the bytes arrive here, go into the local part file and are hashed back
        from it by the helper thread (a future: the next chunk arrives meanwhile); the
        agent's hash of what it read comes after them."""
        f, c = job.file, job.chunk
        verify = self.cfg.verify_checksum
        client.read_reply()
        if self.upload:
            if self.hooks.after_write is not None:
                self.hooks.after_write(c, f.part)
                return sent_hash, client.call(self.hash_request(job))["sha256"] if verify else None
            return sent_hash, client.read_reply()["sha256"] if verify else None
        try:
            fd = fds.get(f.part)
        except OSError as err:
            raise TransferError(f"cannot write {f.part}: {err.strerror}", retryable=False) from None
        view = memoryview(buf.pieces[0])
        offset, end = c.offset, c.offset + c.size
        while offset < end:
            piece = view[: min(len(view), end - offset)]
            client.read_exact_into(piece)
            try:
                written = 0
                while written < len(piece):
                    written += os.pwrite(fd, piece[written:], offset + written)
            except OSError as err:
                raise TransferError(f"cannot write {f.part}: {err.strerror}", retryable=False) from None
            offset += len(piece)
        src_hash = client.read_reply()["sha256"]
        if self.hooks.after_write is not None:
            self.hooks.after_write(c, f.part)
        if not verify:
            fds.settle(fd, c.offset, c.size)
            return src_hash, None

        def stored() -> str:  # the helper thread is the only user of fds.settle meanwhile
            digest = agent.hash_fd(fd, c.offset, c.size, buf.readback)
            fds.settle(fd, c.offset, c.size)
            return digest

        return src_hash, buf.hashing.submit(stored)

    # -- the run --

    def run(self, items: Sequence[TransferItem], local_root: str, remote_root: str) -> TransferResult:
        started = time.monotonic()
        pairs: list[tuple[str, str]] = []
        for item in items:  # every path is checked before any connection is made
            if self.upload:
                pairs.append((check_local(item.source, local_root), check_remote(item.dest, remote_root)))
            else:
                pairs.append((check_remote(item.source, remote_root), check_local(item.dest, local_root)))
        if self.upload:
            for src, _ in pairs:
                if not os.path.exists(src):
                    raise TransferError(f"local path {src} does not exist", retryable=False)
        ep = self.endpoint
        if not ep.strict_host_key_checking:
            self.log.warning(HOST_KEY_WARNING.format(host=ep.host, port=ep.port))
        remote = _RemoteFiles(self.connect, self.connect())
        self.prefetch(self.streams - 1)  # sessions start while we plan
        local = _LocalFiles()
        src_side, dst_side = (local, remote) if self.upload else (remote, local)
        try:
            files, empty_dirs = self.plan(src_side, pairs, remote_root if self.upload else local_root)
            jobs, create, commit = self.resume(files, dst_side)
            total = sum(f.size for f in files)
            chunks_total = sum(len(f.chunks) for f in files)
            if create or empty_dirs:
                dst_side.create([[f.part, f.size] for f in create], empty_dirs)
            self.tracker = ProgressTracker(
                total, chunks_total, self.progress_cb, self.cfg.progress_interval_s
            )
            self.tracker.bytes_done = self.bytes_skipped
            self.tracker.chunks_done = self.chunks_skipped
            workers = min(self.streams, len(jobs))
            self.log.info(
                f"{self.direction}: {len(files)} files, {total / MB:,.1f} MB in {chunks_total} chunks "
                f"({self.chunks_skipped} already verified), {workers} workers over {self.transport} "
                f"to {ep.address}"
            )
            self.tracker.start()
            try:
                self.move(jobs, workers, remote)
            finally:
                self.tracker.stop(final=self.error is None)
            if self.error is not None:
                raise self.error
            if commit:
                self.check_sources(src_side, pairs, commit)
                dst_side.commit([[f.part, f.dest] for f in commit])
            self.prune(dst_side, pairs, files)
        finally:
            remote.close()
            for t in self.prefetching:
                t.join()
            while not self.spare.empty():
                spare = self.spare.get()
                if spare is not None:
                    spare.close()
            for client in self.returned:
                client.close()
            self.connector.close()
        seconds = time.monotonic() - started
        sent = self.tracker.bytes_sent
        return TransferResult(
            direction=self.direction,
            files=len(files),
            bytes=total,
            bytes_sent=sent,
            seconds=round(seconds, 3),
            mb_per_s=round(total / MB / seconds, 1) if seconds > 0 else 0.0,
            chunks_total=chunks_total,
            chunks_sent=self.chunks_sent,
            chunks_skipped=self.chunks_skipped,
            chunks_retried=self.chunks_retried,
            workers=workers,
            transport=self.transport,
        )

    def move(self, jobs: list[_Job], workers: int, remote: _RemoteFiles) -> None:
        if not jobs:
            return
        todo: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        for job in jobs:
            todo.put(job)
        # worker 0 reuses the control session (one handshake fewer); it comes back in `returned`
        first, remote.client = remote.client, None
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
        if self.returned:
            remote.client = self.returned.pop()

    def prune(self, dst_side: Any, pairs: list[tuple[str, str]], files: list[FilePlan]) -> None:
        """Each destination directory ends up holding exactly what was sent to it: files an
        earlier send of the same directory left (a re-run stage whose source was exported
        again under new names) would otherwise be read as data too."""
        for _src, dst in pairs:
            prefix = dst.rstrip("/") + "/"
            keep = [f.dest[len(prefix) :] for f in files if f.dest.startswith(prefix)]
            if keep or not any(f.dest == dst for f in files):
                deleted = dst_side.prune(dst, keep)
                if deleted:
                    self.log.info(
                        f"{self.direction}: removed {len(deleted)} files under {dst} not in this send"
                    )

    def check_sources(self, src_side: Any, pairs: list[tuple[str, str]], files: list[FilePlan]) -> None:
        """Refuse to commit a file whose source changed while it was being sent."""
        current = {}
        for src, _ in pairs:
            for rel, size, mtime_ns in src_side.list(src):
                current[join(src, rel, remote=not self.upload)] = f"{size}:{mtime_ns}"
        for f in files:
            if current.get(f.source) != f.sig:
                raise TransferError(
                    f"source {f.source} changed during the transfer; the next attempt starts it over"
                )


def transfer(
    direction: str,
    endpoint: Endpoint,
    items: Sequence[TransferItem],
    *,
    cfg: TransferConfig,
    store: WorkflowStore,
    task_id: int,
    step: str,
    local_root: str,
    remote_root: str | None = None,
    log: Log | None = None,
    progress: Callable[[Progress], None] | None = None,
    hooks: TransferHooks | None = None,
    transport: str = "auto",
    cancelled: Callable[[], bool] | None = None,
    streams: int | None = None,
) -> TransferResult:
    """Move `items` (direction "upload": local → server, "download": server → local).

    Paths must lie under `local_root` (staging) and `remote_root` (default: the endpoint's);
    `progress` gets a :class:`Progress` every cfg.progress_interval_s; `transport` is
    "auto" (OpenSSH when the ssh binary exists, else paramiko), "openssh" or "paramiko";
    `streams` (parallel sessions) defaults to :func:`stream_count` of cfg.parallel_workers.
    """
    if direction not in ("upload", "download"):
        raise ValueError(f"direction must be upload or download, got {direction!r}")
    run = _Transfer(
        direction,
        endpoint,
        cfg,
        store,
        task_id,
        step,
        log or _PyLog(),
        progress,
        hooks or TransferHooks(),
        transport,
        cancelled,
        streams,
    )
    return run.run(items, local_root, remote_root or endpoint.remote_root)


def upload(endpoint: Endpoint, items: Sequence[TransferItem], **kwargs: Any) -> TransferResult:
    """Local → server. items: (local file or dir → remote path); kwargs as for :func:`transfer`."""
    return transfer("upload", endpoint, items, **kwargs)


def download(endpoint: Endpoint, items: Sequence[TransferItem], **kwargs: Any) -> TransferResult:
    """Server → local. items: (remote file or dir → local path); kwargs as for :func:`transfer`."""
    return transfer("download", endpoint, items, **kwargs)
