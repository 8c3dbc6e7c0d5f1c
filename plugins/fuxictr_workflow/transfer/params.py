"""What one transfer is told: where, how, what to record and whom to report to."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from fuxictr_workflow.domain.config import TransferConfig
from fuxictr_workflow.domain.stages import ChunkStatus
from fuxictr_workflow.ssh.servers import Endpoint
from fuxictr_workflow.store import ChunkSpec, WorkflowStore
from fuxictr_workflow.transfer.progress import Progress

_py_log = logging.getLogger("fuxictr_workflow.transfer")

# Chunks in flight per session: 2 keeps the agent busy with the next chunk while this
# side verifies and records the current one; more only adds memory in the pipes.
PIPELINE_DEPTH = 2


class Log(Protocol):
    def info(self, message: str) -> None: ...
    def warning(self, message: str) -> None: ...


class PyLog:
    """The default :class:`Log`: Python logging."""

    def info(self, message: str) -> None:
        _py_log.info(message)

    def warning(self, message: str) -> None:
        _py_log.warning(message)


@dataclass
class TransferHooks:
    """Calls at real points of the data path, for fault tests.

    after_write(chunk, part_path): the chunk's bytes are in the destination part file.
    Downloading, or uploading with ``pipeline_depth=1``, its hash has not been taken yet;
    deeper upload pipelines request the hash with the bytes, so the agent may have taken it.
    after_verify(chunk): the chunk is recorded verified.
    """

    after_write: Callable[[ChunkSpec, str], None] | None = None
    after_verify: Callable[[ChunkSpec], None] | None = None


def never_cancelled() -> bool:
    return False


@dataclass(frozen=True)
class TransferParams:
    """One transfer's settings, as :func:`~fuxictr_workflow.transfer.engine.transfer` takes them.

    `transport` is "auto" (OpenSSH when the ssh binary exists, else paramiko), "openssh" or
    "paramiko"; `streams` (parallel sessions) defaults to
    :func:`~fuxictr_workflow.transfer.sessions.stream_count` of cfg.parallel_workers.
    `pipeline_depth` is how many chunks each session has in flight; at 1 a session runs in
    lockstep, an upload's hash requested only once its write is acknowledged.
    """

    direction: str  # "upload" (local → server) or "download" (server → local)
    endpoint: Endpoint
    cfg: TransferConfig
    store: WorkflowStore
    task_id: int
    step: str
    log: Log = field(default_factory=PyLog)
    progress: Callable[[Progress], None] | None = None
    hooks: TransferHooks = field(default_factory=TransferHooks)
    transport: str = "auto"
    cancelled: Callable[[], bool] = never_cancelled
    streams: int | None = None
    pipeline_depth: int = PIPELINE_DEPTH

    def __post_init__(self) -> None:
        if self.direction not in ("upload", "download"):
            raise ValueError(f"direction must be upload or download, got {self.direction!r}")
        if self.pipeline_depth < 1:
            raise ValueError(f"pipeline_depth must be at least 1, got {self.pipeline_depth}")

    @property
    def upload(self) -> bool:
        return self.direction == "upload"

    @property
    def done_status(self) -> frozenset[ChunkStatus]:
        """Chunk statuses a resumed transfer need not send again."""
        if self.cfg.verify_checksum:
            return frozenset({ChunkStatus.VERIFIED})
        return frozenset({ChunkStatus.VERIFIED, ChunkStatus.SENT})

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry `attempt + 1` (of a connection or a chunk)."""
        return self.cfg.retry_backoff_s * (2**attempt)
