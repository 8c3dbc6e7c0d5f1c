"""What to move: safe paths, the files of each item, and their chunks.

A transfer moves one or more items (a file or a directory of files) from a source to a
destination path. Each file is cut into chunks of `chunk_size`; a chunk's id is the
file's path relative to the destination root plus the chunk index, so it is stable
across attempts and unique within a (task, step). Ids longer than the store's
VARCHAR(100) keep a hash of the path plus its tail.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from dataclasses import dataclass, field

from fuxictr_workflow.store import ChunkSpec
from fuxictr_workflow.transfer.errors import UnsafePath

CHUNK_ID_MAX = 100
FILE_PATH_MAX = 500
PART_SUFFIX = ".part"


@dataclass(frozen=True)
class TransferItem:
    """One source path (file or directory) and where it goes."""

    source: str
    dest: str


@dataclass
class FilePlan:
    rel: str  # destination path relative to the destination root: the chunk ids' stem
    source: str
    dest: str
    size: int
    sig: str  # "size:mtime_ns" of the source when planned; a change means start over
    chunks: list[ChunkSpec] = field(default_factory=list)

    @property
    def part(self) -> str:
        return self.dest + PART_SUFFIX


def _refuse_bad_chars(path: str, what: str) -> None:
    if not path or "\x00" in path or "\n" in path:
        raise UnsafePath(f"{what} {path!r}: empty or contains NUL/newline")
    if ".." in path.replace("\\", "/").split("/"):
        raise UnsafePath(f"{what} {path!r}: '..' is not allowed in transfer paths")


def check_remote(path: str, root: str) -> str:
    """A normalized absolute remote path inside `root`, else UnsafePath (before any connection)."""
    _refuse_bad_chars(path, "remote path")
    if not posixpath.isabs(path):
        raise UnsafePath(f"remote path {path!r} must be absolute (under {root})")
    norm, base = posixpath.normpath(path), posixpath.normpath(root)
    if norm == base or not norm.startswith(base.rstrip("/") + "/"):
        raise UnsafePath(f"remote path {path!r} is outside the server's remote_root {root}")
    return norm


def check_local(path: str, root: str) -> str:
    """A normalized absolute local path inside `root` (symlinks resolved), else UnsafePath."""
    _refuse_bad_chars(path, "local path")
    norm = os.path.realpath(os.path.abspath(path))
    base = os.path.realpath(os.path.abspath(root))
    if norm == base or not norm.startswith(base.rstrip(os.sep) + os.sep):
        raise UnsafePath(f"local path {path!r} is outside the staging root {root}")
    return norm


def check_listed(rel: object, source: str) -> str:
    """A file name from a side's listing of `source`, refused unless it is "" (the item is the
    file itself) or a relative path without '..' (a file inside the item)."""
    if not isinstance(rel, str):
        raise UnsafePath(f"listing of {source}: file name {rel!r} is not a string")
    if rel == "":
        return rel
    _refuse_bad_chars(rel, f"listing of {source}: file")
    if rel.startswith(("/", "\\")) or any(part in ("", ".") for part in rel.split("/")):
        raise UnsafePath(f"listing of {source}: file {rel!r} is not a plain relative path inside it")
    return rel


def chunk_id(rel: str, index: int) -> str:
    """`<rel>:<index>`, or `<hash>~<tail of rel>:<index>` when that would exceed 100 chars."""
    suffix = f":{index}"
    plain = rel + suffix
    if len(plain) <= CHUNK_ID_MAX:
        return plain
    digest = hashlib.sha256(rel.encode()).hexdigest()[:20]
    room = CHUNK_ID_MAX - len(digest) - 1 - len(suffix)
    return f"{digest}~{rel[-room:]}{suffix}"


def plan_file(rel: str, source: str, dest: str, size: int, mtime_ns: int, chunk_size: int) -> FilePlan:
    """A file's chunks; an empty file still gets one (empty) chunk so its state is recorded."""
    sig = f"{size}:{mtime_ns}"
    plan = FilePlan(rel=rel, source=source, dest=dest, size=size, sig=sig)
    count = max(1, -(-size // chunk_size))
    for i in range(count):
        offset = i * chunk_size
        plan.chunks.append(
            ChunkSpec(
                chunk_id=chunk_id(rel, i),
                file_path=rel[-FILE_PATH_MAX:],
                offset=offset,
                size=min(chunk_size, size - offset),
                source_sig=sig,
            )
        )
    return plan


def join(base: str, rel: str, *, remote: bool) -> str:
    if not rel:
        return base
    return posixpath.join(base, rel) if remote else os.path.join(base, rel)


def relative_to(path: str, root: str, *, remote: bool) -> str:
    mod = posixpath if remote else os.path
    return mod.relpath(path, mod.normpath(root))
