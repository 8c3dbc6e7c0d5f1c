"""The chunked, parallel, verified, resumable transfer: :func:`upload` and :func:`download`.

One run: check paths (before connecting) → connect → list the source files → cut them
into chunks and record them in ``transfer_chunks`` (keeping verified ones: resume,
:mod:`.resume`) → `streams` sessions (:mod:`.sessions`) move the pending chunks into
``<dest>.part`` (:mod:`.worker`), each chunk's hashes compared (:mod:`.chunk_io`) → when
every chunk of every file is verified, each part is fsynced and renamed to its final name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from fuxictr_workflow.domain.config import TransferConfig
from fuxictr_workflow.ssh.servers import HOST_KEY_WARNING, Endpoint
from fuxictr_workflow.store import WorkflowStore
from fuxictr_workflow.transfer.channel import pick_transport
from fuxictr_workflow.transfer.errors import TransferError
from fuxictr_workflow.transfer.params import (
    PIPELINE_DEPTH,
    Log,
    PyLog,
    TransferHooks,
    TransferParams,
    never_cancelled,
)
from fuxictr_workflow.transfer.plan import FilePlan, TransferItem, check_local, check_remote, join
from fuxictr_workflow.transfer.progress import MB, Progress, ProgressTracker
from fuxictr_workflow.transfer.resume import plan_files, resume
from fuxictr_workflow.transfer.sessions import Files, LocalFiles, RemoteFiles, SessionPool, stream_count
from fuxictr_workflow.transfer.worker import ChunkMover


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


def _checked_pairs(
    params: TransferParams, items: Sequence[TransferItem], local_root: str, remote_root: str
) -> list[tuple[str, str]]:
    """(source, destination) of each item, every path checked before any connection is made."""
    pairs: list[tuple[str, str]] = []
    for item in items:
        if params.upload:
            pairs.append((check_local(item.source, local_root), check_remote(item.dest, remote_root)))
        else:
            pairs.append((check_remote(item.source, remote_root), check_local(item.dest, local_root)))
    if params.upload:
        for src, _ in pairs:
            if not os.path.exists(src):
                raise TransferError(f"local path {src} does not exist", retryable=False)
    return pairs


def run(
    params: TransferParams, items: Sequence[TransferItem], local_root: str, remote_root: str
) -> TransferResult:
    """One transfer of `items` (see the module's docstring)."""
    p, ep = params, params.endpoint
    transport = pick_transport(p.transport, ep)
    streams = p.streams or stream_count(p.cfg.parallel_workers, ep.host)
    started = time.monotonic()
    pairs = _checked_pairs(p, items, local_root, remote_root)
    if not ep.strict_host_key_checking:
        p.log.warning(HOST_KEY_WARNING.format(host=ep.host, port=ep.port))
    pool = SessionPool(p, transport)
    remote = RemoteFiles(pool.connect, pool.connect())
    pool.prefetch(streams - 1)  # sessions start while we plan
    local = LocalFiles()
    src_side, dst_side = (local, remote) if p.upload else (remote, local)
    try:
        files, empty_dirs = plan_files(p, src_side, pairs, remote_root if p.upload else local_root)
        work = resume(p, files, dst_side)
        total = sum(f.size for f in files)
        chunks_total = sum(len(f.chunks) for f in files)
        if work.create or empty_dirs:
            dst_side.create([[f.part, f.size] for f in work.create], empty_dirs)
        tracker = ProgressTracker(total, chunks_total, p.progress, p.cfg.progress_interval_s)
        tracker.bytes_done = work.bytes_skipped
        tracker.chunks_done = work.chunks_skipped
        mover = ChunkMover(p, pool, tracker)
        workers = min(streams, len(work.jobs))
        p.log.info(
            f"{p.direction}: {len(files)} files, {total / MB:,.1f} MB in {chunks_total} chunks "
            f"({work.chunks_skipped} already verified), {workers} workers over {transport} "
            f"to {ep.address}"
        )
        tracker.start()
        try:
            if work.jobs:
                # worker 0 reuses the control session (one handshake fewer); it comes back to the pool
                first, remote.client = remote.client, None
                mover.move(work.jobs, workers, first)
                remote.client = pool.take_returned()
        finally:
            tracker.stop(final=mover.error is None)
        if mover.error is not None:
            raise mover.error
        if work.commit:
            _check_sources(p, src_side, pairs, work.commit)
            dst_side.commit([[f.part, f.dest] for f in work.commit])
        _prune(p, dst_side, pairs, files)
    finally:
        remote.close()
        pool.close()
    seconds = time.monotonic() - started
    return TransferResult(
        direction=p.direction,
        files=len(files),
        bytes=total,
        bytes_sent=tracker.bytes_sent,
        seconds=round(seconds, 3),
        mb_per_s=round(total / MB / seconds, 1) if seconds > 0 else 0.0,
        chunks_total=chunks_total,
        chunks_sent=mover.chunks_sent,
        chunks_skipped=work.chunks_skipped,
        chunks_retried=mover.chunks_retried,
        workers=workers,
        transport=transport,
    )


def _prune(
    params: TransferParams, dst_side: Files, pairs: list[tuple[str, str]], files: list[FilePlan]
) -> None:
    """Each destination directory ends up holding exactly what was sent to it: files an
    earlier send of the same directory left (a re-run stage whose source was exported
    again under new names) would otherwise be read as data too."""
    for _src, dst in pairs:
        prefix = dst.rstrip("/") + "/"
        keep = [f.dest[len(prefix) :] for f in files if f.dest.startswith(prefix)]
        if keep or not any(f.dest == dst for f in files):
            deleted = dst_side.prune(dst, keep)
            if deleted:
                params.log.info(
                    f"{params.direction}: removed {len(deleted)} files under {dst} not in this send"
                )


def _check_sources(
    params: TransferParams, src_side: Files, pairs: list[tuple[str, str]], files: list[FilePlan]
) -> None:
    """Refuse to commit a file whose source changed while it was being sent."""
    current = {}
    for src, _ in pairs:
        for rel, size, mtime_ns in src_side.list(src):
            current[join(src, rel, remote=not params.upload)] = f"{size}:{mtime_ns}"
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
    pipeline_depth: int = PIPELINE_DEPTH,
) -> TransferResult:
    """Move `items` (direction "upload": local → server, "download": server → local).

    Paths must lie under `local_root` (staging) and `remote_root` (default: the endpoint's);
    `progress` gets a :class:`Progress` every cfg.progress_interval_s; the other settings are
    :class:`TransferParams`'.
    """
    params = TransferParams(
        direction=direction,
        endpoint=endpoint,
        cfg=cfg,
        store=store,
        task_id=task_id,
        step=step,
        log=log or PyLog(),
        progress=progress,
        hooks=hooks or TransferHooks(),
        transport=transport,
        cancelled=cancelled or never_cancelled,
        streams=streams,
        pipeline_depth=pipeline_depth,
    )
    return run(params, items, local_root, remote_root or endpoint.remote_root)


def upload(endpoint: Endpoint, items: Sequence[TransferItem], **kwargs: Any) -> TransferResult:
    """Local → server. items: (local file or dir → remote path); kwargs as for :func:`transfer`."""
    return transfer("upload", endpoint, items, **kwargs)


def download(endpoint: Endpoint, items: Sequence[TransferItem], **kwargs: Any) -> TransferResult:
    """Server → local. items: (remote file or dir → local path); kwargs as for :func:`transfer`."""
    return transfer("download", endpoint, items, **kwargs)
