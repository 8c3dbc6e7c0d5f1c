"""Per-epoch training metrics: one task_epochs row per epoch of a step's job.

Rows are written only by :meth:`TaskLogs.append_job_lines <fuxictr_workflow.store.logs.TaskLogs.append_job_lines>`,
in the transaction that logs the job's lines and moves the step's offset in the job's log, so
each epoch is stored exactly once whoever follows the job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fuxictr_workflow.store.database import Database, task_epochs


@dataclass(frozen=True)
class EpochRecord:
    """An epoch's validation AUC and logloss and its mean training loss (None: not measured)."""

    epoch: int
    auc: float | None
    logloss: float | None
    train_loss: float | None

    @classmethod
    def of(cls, event: dict[str, Any]) -> EpochRecord:
        """From the runner's "epoch" event; ValueError/TypeError/KeyError when it is malformed.
        A non-finite value (a diverged loss) is None: JSON has no NaN."""
        epoch = event["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"epoch must be a positive integer, got {epoch!r}")
        return cls(epoch, *(_finite(event.get(k)) for k in ("auc", "logloss", "train_loss")))


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def insert_epochs(
    conn: Connection, task_id: int, step: str, epochs: Sequence[EpochRecord], ts: datetime
) -> None:
    """Within the caller's transaction (append_job_lines). An epoch number the job reports again
    replaces what it reported before: a runner repeating itself must not fail the transaction
    that also records the job's log lines (its follower would retry the same bytes forever)."""
    latest = {e.epoch: e for e in epochs}
    if latest:
        conn.execute(
            task_epochs.delete().where(
                task_epochs.c.task_id == task_id, task_epochs.c.step == step, task_epochs.c.epoch.in_(latest)
            )
        )
        conn.execute(
            task_epochs.insert(),
            [{"task_id": task_id, "step": step, "timestamp": ts, **asdict(e)} for e in latest.values()],
        )


def forget_epochs(conn: Connection, task_id: int, step: str) -> None:
    """A new job of the step replaces the epochs of the one before (within the caller's transaction)."""
    conn.execute(task_epochs.delete().where(task_epochs.c.task_id == task_id, task_epochs.c.step == step))


class TaskEpochs:
    def __init__(self, db: Database) -> None:
        self.db = db

    def epochs(self, task_id: int, step: str) -> list[EpochRecord]:
        """The step's epochs in order."""
        query = (
            sa.select(task_epochs.c.epoch, task_epochs.c.auc, task_epochs.c.logloss, task_epochs.c.train_loss)
            .where(task_epochs.c.task_id == task_id, task_epochs.c.step == step)
            .order_by(task_epochs.c.epoch)
        )
        with self.db.read() as conn:
            return [EpochRecord(**r) for r in conn.execute(query).mappings()]
