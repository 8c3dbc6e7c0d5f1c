"""Which chunks a run moves: the source files cut into chunks, recorded in the store, and
checked against what an earlier attempt left at the destination (resume)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fuxictr_workflow.domain.stages import ChunkStatus
from fuxictr_workflow.store import ChunkSpec
from fuxictr_workflow.transfer.errors import TransferError
from fuxictr_workflow.transfer.params import TransferParams
from fuxictr_workflow.transfer.plan import FilePlan, check_listed, check_local, join, plan_file, relative_to
from fuxictr_workflow.transfer.sessions import Files


@dataclass
class Job:
    """A chunk to move in this run."""

    file: FilePlan
    chunk: ChunkSpec
    resend: bool = False  # it failed on an earlier attempt: sending it again is a retry
    attempt: int = 0  # failed attempts in this run


@dataclass
class Resume:
    """A run's work: the pending chunks, the files whose part must be (re)created, the files
    to commit at the end, and what earlier attempts already verified."""

    jobs: list[Job] = field(default_factory=list)
    create: list[FilePlan] = field(default_factory=list)
    commit: list[FilePlan] = field(default_factory=list)
    chunks_skipped: int = 0
    bytes_skipped: int = 0


def plan_files(
    params: TransferParams, src_side: Files, pairs: list[tuple[str, str]], dest_root: str
) -> tuple[list[FilePlan], list[str]]:
    """Every source file's plan, and the destination directories of empty source directories.

    The source side's listing names the files: on a download that is the training server, so
    each name is checked to stay inside its item before it becomes a local path (a server
    listing ``../../.bashrc`` or ``/etc/x`` must not choose where this worker writes)."""
    upload = params.upload
    files: list[FilePlan] = []
    empty_dirs: list[str] = []
    for src, dst in pairs:
        listed = src_side.list(src)
        if not listed:
            empty_dirs.append(dst)
        for rel, size, mtime_ns in listed:
            rel = check_listed(rel, src)
            dest = join(dst, rel, remote=upload)
            if not upload:
                dest = check_local(dest, dest_root)
            files.append(
                plan_file(
                    relative_to(dest, dest_root, remote=upload),
                    join(src, rel, remote=not upload),
                    dest,
                    size,
                    mtime_ns,
                    params.cfg.chunk_size,
                )
            )
    seen: set[str] = set()
    for f in files:
        if f.dest in seen:
            raise TransferError(f"two sources go to the same destination {f.dest}", retryable=False)
        seen.add(f.dest)
    return files, empty_dirs


def resume(params: TransferParams, files: list[FilePlan], dst_side: Files) -> Resume:
    """Record the plan in the store and keep what an earlier attempt verified, as long as
    its source is unchanged and its part file is still at the destination."""
    store, task_id, step, log = params.store, params.task_id, params.step, params.log
    before = {r["chunk_id"]: r for r in store.chunks(task_id, step)}
    for f in files:
        if any(c.chunk_id in before and before[c.chunk_id]["source_sig"] != f.sig for c in f.chunks):
            log.warning(f"source {f.source} changed since the last attempt (size/mtime); starting it over")
    specs = [c for f in files for c in f.chunks]
    rows = {r["chunk_id"]: r for r in store.register_chunks(task_id, step, specs)}
    store.forget_chunks(task_id, step, list(rows))  # e.g. a file that shrank
    sizes = dst_side.stat([p for f in files for p in (f.dest, f.part)]) if files else []
    done_status = params.done_status
    work = Resume()
    for i, f in enumerate(files):
        dest_size, part_size = sizes[2 * i], sizes[2 * i + 1]
        done = [c for c in f.chunks if rows[c.chunk_id]["status"] in done_status]
        if len(done) == len(f.chunks) and dest_size == f.size and part_size is None:
            pending: list[ChunkSpec] = []  # finished on an earlier attempt
        elif done and part_size == f.size:
            done_ids = {c.chunk_id for c in done}
            pending = [c for c in f.chunks if c.chunk_id not in done_ids]
            work.commit.append(f)
        else:
            if done:
                log.warning(
                    f"{f.part} is missing at the destination; re-sending its {len(done)} verified chunks"
                )
                for c in done:
                    store.mark_chunk(task_id, step, c.chunk_id, ChunkStatus.PENDING)
                done = []
            pending = list(f.chunks)
            work.create.append(f)
            work.commit.append(f)
        work.chunks_skipped += len(done)
        work.bytes_skipped += sum(c.size for c in done)
        work.jobs += [Job(f, c, rows[c.chunk_id]["status"] == ChunkStatus.FAILED) for c in pending]
    return work
