"""The transfer-chunk ledger: which chunks of a transfer are planned, sent and verified.

The transfer engine records its plan here before moving bytes, and each chunk's verdict as
it comes, so that a later attempt resumes with the chunks not yet verified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fuxictr_workflow.domain.stages import ChunkStatus, stage
from fuxictr_workflow.store.database import Database, transfer_chunks, utcnow
from fuxictr_workflow.store.errors import NotFound


@dataclass(frozen=True)
class ChunkSpec:
    chunk_id: str
    file_path: str
    offset: int
    size: int
    source_sig: str


class ChunkLedger:
    """The transfer_chunks rows of each (task, step)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def register_chunks(
        self, task_id: int, step_name: str, specs: Sequence[ChunkSpec]
    ) -> list[dict[str, Any]]:
        """Record a transfer's chunk plan; keep rows whose source is unchanged (resume) and
        reset rows whose source changed. Returns the current rows for these chunk ids."""
        stage(step_name)

        def run(conn: Connection) -> list[dict[str, Any]]:
            ids = [s.chunk_id for s in specs]
            existing = (
                {
                    r["chunk_id"]: r
                    for r in conn.execute(
                        sa.select(transfer_chunks).where(
                            transfer_chunks.c.task_id == task_id,
                            transfer_chunks.c.step_name == step_name,
                            transfer_chunks.c.chunk_id.in_(ids),
                        )
                    ).mappings()
                }
                if ids
                else {}
            )
            now = utcnow()
            for spec in specs:
                fresh = {
                    "file_path": spec.file_path,
                    "offset": spec.offset,
                    "size": spec.size,
                    "source_sig": spec.source_sig,
                    "status": ChunkStatus.PENDING,
                    "checksum": None,
                    "updated_at": now,
                }
                old = existing.get(spec.chunk_id)
                if old is None:
                    conn.execute(
                        transfer_chunks.insert().values(
                            task_id=task_id, step_name=step_name, chunk_id=spec.chunk_id, **fresh
                        )
                    )
                elif (old["source_sig"], old["offset"], old["size"]) != (
                    spec.source_sig,
                    spec.offset,
                    spec.size,
                ):
                    conn.execute(
                        transfer_chunks.update().where(transfer_chunks.c.id == old["id"]).values(**fresh)
                    )
            return (
                [
                    dict(r)
                    for r in conn.execute(
                        sa.select(transfer_chunks)
                        .where(
                            transfer_chunks.c.task_id == task_id,
                            transfer_chunks.c.step_name == step_name,
                            transfer_chunks.c.chunk_id.in_(ids),
                        )
                        .order_by(transfer_chunks.c.id)
                    ).mappings()
                ]
                if ids
                else []
            )

        return self.db.write(run)

    def mark_chunk(
        self,
        task_id: int,
        step_name: str,
        chunk_id: str,
        status: ChunkStatus,
        *,
        checksum: str | None = None,
        sent: bool = False,
        retried: bool = False,
    ) -> None:
        """Record a chunk's new status; sent=True counts one more transmission of its bytes."""
        values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
        if checksum is not None:
            values["checksum"] = checksum
        if sent:
            values["send_count"] = transfer_chunks.c.send_count + 1
        if retried:
            values["retry_count"] = transfer_chunks.c.retry_count + 1

        def run(conn: Connection) -> None:
            updated = conn.execute(
                transfer_chunks.update()
                .where(
                    transfer_chunks.c.task_id == task_id,
                    transfer_chunks.c.step_name == step_name,
                    transfer_chunks.c.chunk_id == chunk_id,
                )
                .values(**values)
            ).rowcount
            if updated == 0:
                raise NotFound(f"task {task_id} step {step_name} has no chunk {chunk_id!r}")

        self.db.write(run)

    def forget_chunks(self, task_id: int, step_name: str, keep_ids: Sequence[str]) -> int:
        """Delete a step's chunk rows not in `keep_ids` (no longer planned, e.g. a file that
        shrank or went away), so progress counts only the current plan. Returns rows deleted."""
        stage(step_name)
        keep = set(keep_ids)

        def run(conn: Connection) -> int:
            rows = conn.execute(
                sa.select(transfer_chunks.c.id, transfer_chunks.c.chunk_id).where(
                    transfer_chunks.c.task_id == task_id, transfer_chunks.c.step_name == step_name
                )
            ).all()
            stale = [r.id for r in rows if r.chunk_id not in keep]
            for start in range(0, len(stale), 500):  # stay under SQLite's bound-parameter limit
                batch = stale[start : start + 500]
                conn.execute(transfer_chunks.delete().where(transfer_chunks.c.id.in_(batch)))
            return len(stale)

        return self.db.write(run)

    def chunks(self, task_id: int, step_name: str | None = None) -> list[dict[str, Any]]:
        query = (
            sa.select(transfer_chunks)
            .where(transfer_chunks.c.task_id == task_id)
            .order_by(transfer_chunks.c.id)
        )
        if step_name is not None:
            query = query.where(transfer_chunks.c.step_name == step_name)
        with self.db.read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def chunk_progress(self, task_id: int) -> dict[str, dict[str, int]]:
        """Per step: chunks and bytes in total and verified (for the API/UI)."""
        verified = sa.case((transfer_chunks.c.status == ChunkStatus.VERIFIED, 1), else_=0)
        query = (
            sa.select(
                transfer_chunks.c.step_name,
                sa.func.count().label("chunks_total"),
                sa.func.sum(verified).label("chunks_verified"),
                sa.func.coalesce(sa.func.sum(transfer_chunks.c.size), 0).label("bytes_total"),
                sa.func.coalesce(sa.func.sum(transfer_chunks.c.size * verified), 0).label("bytes_verified"),
            )
            .where(transfer_chunks.c.task_id == task_id)
            .group_by(transfer_chunks.c.step_name)
        )
        with self.db.read() as conn:
            return {
                r.step_name: {k: int(v or 0) for k, v in r._mapping.items() if k != "step_name"}
                for r in conn.execute(query)
            }
