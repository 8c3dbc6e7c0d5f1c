"""One chunk on the wire: its request and bytes out, its replies and hashes back.

Each chunk's sha256 is taken twice: by the sender while the bytes stream, and by the
destination from what it stored. A worker starts a chunk (:meth:`ChunkIO.start`) before it
finishes the one ahead of it (:meth:`ChunkIO.finish`); see :mod:`.worker`.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fuxictr_workflow.transfer import agent
from fuxictr_workflow.transfer.channel import AgentClient
from fuxictr_workflow.transfer.errors import TransferError
from fuxictr_workflow.transfer.params import TransferParams
from fuxictr_workflow.transfer.resume import Job


@dataclass
class Buffers:
    """One worker's memory: two piece buffers used in turn (one being hashed while the other
    is filled), one for read-back hashes, and the helper thread that hashes."""

    pieces: tuple[bytearray, bytearray]
    readback: bytearray
    hashing: ThreadPoolExecutor

    @classmethod
    def new(cls) -> Buffers:
        return cls(
            (bytearray(agent.PIECE), bytearray(agent.PIECE)), bytearray(agent.PIECE), ThreadPoolExecutor(1)
        )


class ChunkIO:
    def __init__(self, params: TransferParams) -> None:
        self.upload = params.upload
        self.verify = params.cfg.verify_checksum
        self.hooks = params.hooks
        # lockstep: an upload's hash is requested only once its write is acknowledged
        self.lockstep = params.pipeline_depth == 1

    @staticmethod
    def hash_request(job: Job) -> dict[str, Any]:
        return {"op": "hash", "path": job.file.part, "off": job.chunk.offset, "size": job.chunk.size}

    def start(self, client: AgentClient, job: Job, buf: Buffers, fds: agent.FdCache) -> str | None:
        """Send a chunk's request; uploading, also its bytes (hashed on the way: the sender's
        hash, returned) and, unless in lockstep, the request to hash the region as the agent
        stored it (no round trip between the write and the hash)."""
        f, c = job.file, job.chunk
        verify = self.verify
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
        if not self.lockstep:
            client.send_request(self.hash_request(job))
        return h.hexdigest()

    def finish(
        self, client: AgentClient, job: Job, sent_hash: str | None, buf: Buffers, fds: agent.FdCache
    ) -> tuple[str | None, str | None | Future[str]]:
        """Read a chunk's replies: (sender's hash, destination's hash of the chunk as stored).

        Downloading, the bytes arrive here, go into the local part file and are hashed back
        from it by the helper thread (a future: the next chunk arrives meanwhile); the
        agent's hash of what it read comes after them."""
        f, c = job.file, job.chunk
        verify = self.verify
        client.read_reply()
        if self.upload:
            if self.hooks.after_write is not None:
                self.hooks.after_write(c, f.part)
            if not verify:
                return sent_hash, None
            if self.lockstep:
                client.send_request(self.hash_request(job))
            return sent_hash, client.read_reply()["sha256"]
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
