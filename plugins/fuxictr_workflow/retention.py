"""Retention: what finished tasks leave behind is deleted once they are `retention.days` old.

For each task that is final (completed, failed, cancelled) and unchanged since the cutoff:

    staging   <storage.staging_dir>/task_<id>/          (this host's copy)
    logs      <storage.log_dir>/task_<id>/               (this host's log files)
    hdfs      <hdfs_path>/task_<id>/                     (the export and the hand-off files)
    server    <remote_root>/task_<id>/ on its server     (data, model, predictions, job logs)
    store     its task_logs and transfer_chunks rows

The task, its steps and the Hive table it loaded stay. Only entries named ``task_<id>`` of
expired ids are ever deleted, and each task is checked again right before each of its
deletions: a task retried meanwhile is pending or running again, with a new updated_at, and
keeps everything. A running task is never expired. ``dry_run`` lists what would go.

Staging and log files are per host. A clean-up run removes those of the host it runs on (the
maintenance DAG's worker, or where `fuxictr-workflow cleanup` is run), and every stage, as it
starts, sweeps its own host's (:func:`sweep_host`, at most once per SWEEP_EVERY): each worker
that runs stages keeps its own disk clean, however many workers there are.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fuxictr_workflow.domain import paths
from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.files import hdfs
from fuxictr_workflow.files.private_files import make_private_dir, touch_private
from fuxictr_workflow.ssh.commands import run_command
from fuxictr_workflow.store import WorkflowStore, utcnow

TASK_DIR_RE = re.compile(r"^task_([0-9]+)$")
# How often a host's stages sweep its staging and log dirs; the stamp's mtime says when it last did.
SWEEP_EVERY = timedelta(hours=1)
SWEEP_STAMP = ".retention-sweep"


@dataclass(frozen=True)
class Removal:
    task_id: int
    where: str  # staging | logs | hdfs | server:<name> | store
    what: str  # a path, a URL or the rows


@dataclass
class CleanupReport:
    cutoff: datetime
    dry_run: bool
    expired: list[int] = field(default_factory=list)
    removed: list[Removal] = field(default_factory=list)
    skipped: list[Removal] = field(default_factory=list)  # came back to life meanwhile
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        out = [f"task {r.task_id}: {verb} {r.where} {r.what}" for r in self.removed]
        out += [f"task {r.task_id}: kept {r.where} {r.what} (the task changed since)" for r in self.skipped]
        out += [f"error: {e}" for e in self.errors]
        out.append(
            f"{len(self.expired)} task(s) finished before {self.cutoff.isoformat(timespec='seconds')}Z; "
            f"{verb} {len(self.removed)} item(s), {len(self.errors)} error(s)"
        )
        return out


class _Cleaner:
    def __init__(self, cfg: WorkflowConfig, store: WorkflowStore, cutoff: datetime, dry_run: bool) -> None:
        self.cfg, self.store, self.cutoff, self.dry_run = cfg, store, cutoff, dry_run
        self.report = CleanupReport(cutoff=cutoff, dry_run=dry_run)

    def remove(self, task_id: int, where: str, what: str, delete: Callable[[], None]) -> None:
        """Delete one item unless this is a dry run or the task is no longer expired."""
        item = Removal(task_id, where, what)
        if self.dry_run:
            self.report.removed.append(item)
            return
        if not self.store.retention.still_expired(task_id, self.cutoff):
            self.report.skipped.append(item)
            return
        try:
            delete()
        except Exception as err:  # one item's failure must not stop the others
            self.report.errors.append(f"task {task_id}: {where} {what}: {type(err).__name__}: {err}")
            return
        self.report.removed.append(item)

    def local(self, task_id: int) -> None:
        for where, root in (("staging", self.cfg.storage.staging_dir), ("logs", self.cfg.storage.log_dir)):
            directory = Path(root) / paths.task_dirname(task_id)
            if directory.is_dir() and not directory.is_symlink():
                self.remove(task_id, where, str(directory), lambda d=directory: shutil.rmtree(d))

    def hdfs_dir(self, task: dict[str, Any]) -> None:
        from fuxictr_workflow.domain.validation import FieldError, validate_hdfs_path

        task_id = int(task["id"])
        if not task["hdfs_path"]:
            return
        try:
            # a run triggered from the UI stores its params as given: never act on an unchecked path
            base = validate_hdfs_path(task["hdfs_path"], self.cfg)
        except FieldError as err:
            self.report.errors.append(f"task {task_id}: hdfs not cleaned: {err}")
            return
        url = f"{base.rstrip('/')}/{paths.task_dirname(task_id)}"
        try:
            fs, path = hdfs.filesystem(url, self.cfg.hdfs.storage_options)
            present = fs.exists(path)
        except Exception as err:
            self.report.errors.append(f"task {task_id}: hdfs {url}: {type(err).__name__}: {err}")
            return
        if present:
            self.remove(task_id, "hdfs", url, lambda: fs.rm(path, recursive=True))

    def server(self, name: str, task_ids: set[int]) -> None:
        """The expired tasks' dirs under the server's remote_root, over one SSH connection."""
        from fuxictr_workflow.ssh.servers import endpoint, prepare_remote_root

        try:
            ep = endpoint(self.cfg, name)
        except Exception as err:  # a server no longer configured, a connection gone
            self.report.errors.append(f"server {name}: {type(err).__name__}: {err}")
            return
        try:
            with ep.paramiko_client() as client:
                ep = prepare_remote_root(ep, client)
                sftp = client.open_sftp()
                try:
                    names = sftp.listdir(ep.remote_root)
                finally:
                    sftp.close()
                for entry in sorted(names):
                    match = TASK_DIR_RE.fullmatch(entry)
                    if match is None or int(match.group(1)) not in task_ids:
                        continue
                    target = f"{ep.remote_root}/{entry}"
                    self.remove(
                        int(match.group(1)), f"server:{name}", target, lambda t=target: _rm(client, t)
                    )
        except Exception as err:
            self.report.errors.append(f"server {name}: {type(err).__name__}: {err}")

    def records(self, task_id: int) -> None:
        counts = self.store.retention.record_counts(task_id)
        if not any(counts.values()):
            return
        what = ", ".join(f"{n} {table} rows" for table, n in counts.items() if n)
        if self.dry_run:
            self.report.removed.append(Removal(task_id, "store", what))
            return
        deleted = self.store.retention.purge_records(task_id, self.cutoff)
        if not deleted:
            self.report.skipped.append(Removal(task_id, "store", what))
            return
        what = ", ".join(f"{n} {table} rows" for table, n in deleted.items() if n)
        self.report.removed.append(Removal(task_id, "store", what))


def _rm(client: Any, path: str) -> None:
    run_command(client)(f"rm -rf -- {shlex.quote(path)}")


def cleanup(
    cfg: WorkflowConfig,
    store: WorkflowStore,
    *,
    days: int | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> CleanupReport:
    """Delete (or with `dry_run` list) what tasks finished more than `days` (default:
    retention.days) ago left behind. Raises ValueError when no period is set."""
    days = days if days is not None else cfg.retention.days
    if days is None:
        raise ValueError("retention.days is not set (null keeps everything); give --days N")
    if days <= 0:
        raise ValueError(f"days must be > 0, got {days}")
    cutoff = (now or utcnow()) - timedelta(days=days)
    cleaner = _Cleaner(cfg, store, cutoff, dry_run)
    tasks = store.retention.finished_before(cutoff)
    cleaner.report.expired = [int(t["id"]) for t in tasks]
    by_server: dict[str, set[int]] = {}
    for task in tasks:
        task_id = int(task["id"])
        cleaner.local(task_id)
        cleaner.hdfs_dir(task)
        by_server.setdefault(task["server"] or str(cfg.default_server), set()).add(task_id)
    for name, ids in sorted(by_server.items()):
        cleaner.server(name, ids)
    for task in tasks:  # last: until then the log rows say what the task was
        cleaner.records(int(task["id"]))
    return cleaner.report


def _local_task_ids(cfg: WorkflowConfig) -> set[int]:
    """The task ids this host holds a staging or log dir of."""
    found: set[int] = set()
    for root in (cfg.storage.staging_dir, cfg.storage.log_dir):
        try:
            entries = list(os.scandir(root))
        except FileNotFoundError:
            continue
        found.update(int(m.group(1)) for e in entries if (m := TASK_DIR_RE.fullmatch(e.name)))
    return found


def sweep_host(
    cfg: WorkflowConfig, store: WorkflowStore, *, now: datetime | None = None
) -> CleanupReport | None:
    """This host's share of the clean-up: the staging and log dirs of expired tasks. None when
    retention is off or this host swept less than SWEEP_EVERY ago (the stamp is renewed first,
    so stages starting together on one host do not all sweep)."""
    if cfg.retention.days is None:
        return None
    stamp = Path(cfg.storage.staging_dir) / SWEEP_STAMP
    try:
        if time.time() - stamp.stat().st_mtime < SWEEP_EVERY.total_seconds():
            return None
    except FileNotFoundError:
        make_private_dir(stamp.parent)
    touch_private(stamp)
    os.utime(stamp)  # an existing stamp: renewed
    cutoff = (now or utcnow()) - timedelta(days=cfg.retention.days)
    cleaner = _Cleaner(cfg, store, cutoff, dry_run=False)
    cleaner.report.expired = sorted(store.retention.expired_among(_local_task_ids(cfg), cutoff))
    for task_id in cleaner.report.expired:
        cleaner.local(task_id)
    return cleaner.report
