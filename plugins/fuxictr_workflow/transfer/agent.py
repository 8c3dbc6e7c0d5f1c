"""The transfer agent: file operations for one side of a chunked transfer.

This module is stdlib-only on purpose. The engine sends its source to the server and
runs it there with ``python3 -S -c`` over one SSH session per worker; the session's
stdin/stdout then carry a small request/response protocol (one JSON line per request,
raw bytes after ``write`` requests and ``read`` replies). The same functions serve the
local side in-process, so both sides create, hash and commit files identically.

Requests (``{"op": ...}``) and replies (``{"ok": 1, ...}`` or ``{"ok": 0, "error": ...}``):

- ``hello [root]`` → agent version; with ``root``, no directory below it may be a symlink in
  any path of the later requests
- ``list path`` → the regular files of a file or directory: ``[[rel, size, mtime_ns], ...]``
- ``stat paths`` → size of each path, or null when it is not a regular file
- ``create parts dirs`` → make parent dirs, create each ``<dest>.part`` at its final size
- ``write path off size [settle]`` + ``size`` raw bytes → ``pwrite`` them into the part file
- ``hash path off size`` → sha256 of that region as stored (read back from the file); the
  region is then left to the page cache's writeback (see :class:`Settler`). Hashes run in
  a helper thread while the next requests are served; replies still leave in request
  order (:class:`Turns`)
- ``read path off size`` → reply, ``size`` raw bytes, then ``{"ok": 1, "sha256": ...}``
- ``commit pairs`` → fsync each part, rename it to its final name, fsync the directory
- ``prune path keep`` → delete the regular files under directory ``path`` (and part files a
  broken attempt left) whose relative name is not in ``keep``: a directory sent again holds
  exactly what was sent, not also the files of an earlier, different send

Symlinks are never followed: files are opened with ``O_NOFOLLOW``, listings refuse symlinked
entries, and with a root the directories between it and a path are checked too. Whoever can
plant a link on the server (a runner, another user of a shared directory) thus cannot make a
transfer read or overwrite a file elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

VERSION = 1
PIECE = 1 << 20  # bytes per read/write call: big enough to amortise syscalls and Python
PIPE_SIZE = 1 << 20  # Linux default pipes hold 64 KiB; bigger pipes mean fewer wakeups


NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class AgentError(Exception):
    """A file operation failed on this side; the message names the path and the reason."""


def _oserror(action: str, path: str, err: OSError) -> AgentError:
    if err.errno == errno.ELOOP:  # what O_NOFOLLOW answers for a symlink
        return AgentError(f"cannot {action} {path}: it is a symlink (symlinks are not followed)")
    return AgentError(f"cannot {action} {path}: {err.strerror or err}")


def check_dirs(path: str, root: str | None) -> None:
    """Refuse `path` when a directory between `root` (exclusive) and it is a symlink."""
    if not root:
        return
    base = os.path.normpath(root)
    parent = os.path.dirname(os.path.normpath(path))
    if not (parent + os.sep).startswith(base.rstrip(os.sep) + os.sep):
        return  # not under root: the engine refuses such paths before sending them
    rel = os.path.relpath(parent, base)
    current = base
    for part in [] if rel == "." else rel.split(os.sep):
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return  # created later (makedirs does not follow what is not there)
        except OSError as err:
            raise _oserror("read", current, err) from None
        if stat.S_ISLNK(st.st_mode):
            raise AgentError(f"cannot use {path}: {current} is a symlink (symlinks are not followed)")


def open_nofollow(path: str, flags: int, mode: int = 0o644, root: str | None = None) -> int:
    check_dirs(path, root)
    return os.open(path, flags | NOFOLLOW, mode)


def enlarge_pipe(fd: int) -> None:
    """Grow a pipe's buffer (Linux only; harmless elsewhere or for non-pipes)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except (OSError, ImportError, ValueError):
        pass


def _symlink(path: str) -> AgentError:
    return AgentError(f"cannot read {path}: it is a symlink (symlinks are not followed)")


def _tree_files(path: str) -> list[tuple[str, os.stat_result]]:
    """Every regular file under the directory `path` (part files included), as (rel, lstat).
    A symlink anywhere in it is refused, not followed or skipped."""
    found = []
    for top, dirs, files in os.walk(path, onerror=None):
        dirs.sort()
        for name in dirs:
            if os.path.islink(os.path.join(top, name)):
                raise _symlink(os.path.join(top, name))
        for name in files:
            full = os.path.join(top, name)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                raise _symlink(full)
            if stat.S_ISREG(st.st_mode):
                found.append((os.path.relpath(full, path), st))
    return found


def list_files(path: str, root: str | None = None) -> list[list[object]]:
    """The regular files of a file or a directory tree, sorted, as [rel, size, mtime_ns]; part
    files are not data. A symlink anywhere in it is refused, not followed or skipped."""
    check_dirs(path, root)
    try:
        st = os.lstat(path)
    except OSError as err:
        raise _oserror("read", path, err) from None
    if stat.S_ISLNK(st.st_mode):
        raise _symlink(path)
    if stat.S_ISREG(st.st_mode):
        return [["", st.st_size, st.st_mtime_ns]]
    if not stat.S_ISDIR(st.st_mode):
        raise AgentError(f"cannot read {path}: not a regular file or directory")
    found = [[rel, st.st_size, st.st_mtime_ns] for rel, st in _tree_files(path) if not rel.endswith(".part")]
    found.sort()
    return found


def stat_sizes(paths: list[str], root: str | None = None) -> list[int | None]:
    """Each path's size, or None when it is missing or not a regular file (a symlink is not)."""
    sizes: list[int | None] = []
    for path in paths:
        check_dirs(path, root)
        try:
            st = os.lstat(path)
            sizes.append(st.st_size if stat.S_ISREG(st.st_mode) else None)
        except FileNotFoundError:
            sizes.append(None)
        except OSError as err:
            raise _oserror("stat", path, err) from None
    return sizes


def create_parts(parts: list[list[object]], dirs: list[str], root: str | None = None) -> None:
    """Make the directories and create each part file at its final size (sparse, zeros)."""
    for d in dirs:
        check_dirs(os.path.join(d, "x"), root)
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as err:
            raise _oserror("create directory", d, err) from None
    for path, size in parts:
        assert isinstance(path, str) and isinstance(size, int)
        try:
            check_dirs(path, root)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            check_dirs(path, root)  # makedirs may have walked through a link planted meanwhile
            fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
        except OSError as err:
            raise _oserror("write", path, err) from None


def hash_fd(fd: int, offset: int, size: int, buf: bytearray | None = None) -> str:
    """sha256 of a region as stored in the file; a short file hashes short (never matches)."""
    h = hashlib.sha256()
    view = memoryview(buf if buf is not None else bytearray(PIECE))
    end = offset + size
    while offset < end:
        n = os.preadv(fd, [view[: min(len(view), end - offset)]], offset)
        if n == 0:
            break
        h.update(view[:n])
        offset += n
    return h.hexdigest()


def read_pieces(fd: int, offset: int, size: int, bufs: tuple[bytearray, bytearray]) -> Iterator[memoryview]:
    """The region as views into `bufs`, used in turn: a piece stays valid while the next one
    is read (a PieceHasher may still be hashing it). A short file ends the pieces early."""
    end, i = offset + size, 0
    while offset < end:
        view = memoryview(bufs[i % 2])[: min(len(bufs[i % 2]), end - offset)]
        n = os.preadv(fd, [view], offset)
        if n == 0:
            return
        yield view[:n]
        offset, i = offset + n, i + 1


class PieceHasher:
    """sha256 of a stream of pieces, each hashed in a helper thread while the caller moves it on.

    Hashing a piece takes about as long as moving it through the SSH pipeline (figures in
    docs/transfer.md): done inline it stalls the stream for as long again. `update(view)` returns at once; the caller may
    reuse `view`'s memory only after the next `update` or `hexdigest` (so two buffers,
    used in turn, keep both threads busy). hashlib releases the GIL for large updates.
    """

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool
        self.h = hashlib.sha256()
        self.pending: Future | None = None

    def update(self, view: memoryview) -> None:
        self.wait()
        self.pending = self.pool.submit(self.h.update, view)

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def hexdigest(self) -> str:
        self.wait()
        return self.h.hexdigest()


class Turns:
    """Replies leave in request order, whichever thread produces them.

    Each request takes a ticket; :meth:`answer` waits until every earlier ticket has been
    answered, runs the work, writes its reply and passes the turn on. An AgentError or
    OSError in the work becomes that request's error reply.
    """

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.cond = threading.Condition()
        self.issued = 0
        self.answered = 0

    def take(self) -> int:
        self.issued += 1
        return self.issued - 1

    def answer(self, ticket: int, op: object, work: Callable[[], dict]) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.answered == ticket)
        try:
            try:
                fields = work()
            except AgentError as err:
                fields = {"ok": 0, "error": str(err)}
            except OSError as err:
                fields = {"ok": 0, "error": f"{op}: {err.strerror or err}"}
            self.write(fields)
        finally:
            with self.cond:
                self.answered += 1
                self.cond.notify_all()

    def write(self, fields: dict) -> None:
        self.out.write(json.dumps(fields).encode() + b"\n")
        self.out.flush()


class Settler:
    """Lets finished regions of destination files go from the page cache as the transfer goes.

    A transfer writes each byte once and reads it back once, right away; keeping gigabytes
    of it cached evicts other data and leaves the final fsync to write everything at once.
    `POSIX_FADV_DONTNEED` on a region just written starts its writeback (its pages are
    still dirty, so they stay); advising it again one chunk later drops them, now clean.
    The kernel then reuses a few warm pages for the next chunks, and pwrite into warm pages
    is much faster than into fresh ones (docs/transfer.md). Advice only: errors are ignored.
    """

    def __init__(self) -> None:
        self.previous: dict[int, tuple[int, int]] = {}  # fd → last region advised once

    def __call__(self, fd: int, offset: int, size: int) -> None:
        advise = getattr(os, "posix_fadvise", None)
        if advise is None or size <= 0:
            return
        earlier = self.previous.get(fd)
        self.previous[fd] = (offset, size)
        for off, n in ((offset, size), earlier) if earlier else ((offset, size),):
            with contextlib.suppress(OSError):
                advise(fd, off, n, os.POSIX_FADV_DONTNEED)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_parts(pairs: list[list[str]], root: str | None = None) -> None:
    """fsync each part and rename it over its final name (a rename replaces a symlink there,
    it does not write through it); then fsync the directories."""
    dirs = set()
    for part, dest in pairs:
        check_dirs(dest, root)
        if not os.path.exists(part) and os.path.isfile(dest):
            continue  # renamed by an earlier attempt whose reply was lost
        try:
            _fsync_path(part)
            os.replace(part, dest)
        except OSError as err:
            raise _oserror("finish", dest, err) from None
        dirs.add(os.path.dirname(dest) or ".")
    for d in dirs:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
            _fsync_path(d)  # the rename itself stands either way


def prune_files(path: str, keep: list[str], root: str | None = None) -> list[str]:
    """Delete what a directory holds beyond ``keep`` (names relative to it), part files
    included; returns the names deleted. A path that is not a directory is left alone, and
    the whole tree is listed (symlinks refused) before anything is deleted."""
    check_dirs(path, root)
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return []
    except FileNotFoundError:
        return []
    wanted = set(keep) | {rel + ".part" for rel in keep}
    extra = sorted(rel for rel, _ in _tree_files(path) if rel not in wanted)
    for rel in extra:
        try:
            os.unlink(os.path.join(path, rel))
        except FileNotFoundError:
            continue
        except OSError as err:
            raise _oserror("delete", os.path.join(path, rel), err) from None
    return extra


class FdCache:
    """Open file descriptors by path, so chunk after chunk of one file costs no open(), and
    the page-cache advice for the regions written through them."""

    def __init__(self, flags: int, limit: int = 64, root: str | None = None) -> None:
        self.flags = flags
        self.limit = limit
        self.root = root
        self.fds: dict[str, int] = {}
        self.settle = Settler()

    def get(self, path: str) -> int:
        fd = self.fds.get(path)
        if fd is None:
            if len(self.fds) >= self.limit:
                self.close()
            fd = self.fds[path] = open_nofollow(path, self.flags, root=self.root)
        return fd

    def forget(self, path: str) -> None:
        fd = self.fds.pop(path, None)
        if fd is not None:
            self.settle.previous.pop(fd, None)  # the number may come back for another file
            os.close(fd)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        self.settle.previous.clear()


class Agent:
    """Serves requests from `inp` and replies on `out` until EOF."""

    def __init__(self, inp: BinaryIO, out: BinaryIO) -> None:
        self.inp = inp
        self.out = out
        self.bufs = (bytearray(PIECE), bytearray(PIECE))
        self.hash_buf = bytearray(PIECE)
        self.root: str | None = None  # set by hello: no symlinked directory below it is used
        self.writers = FdCache(os.O_WRONLY)
        self.readers = FdCache(os.O_RDONLY)  # used by the hashing thread only, or inside a turn
        self.turns = Turns(out)
        # two pools: a queued `hash` request waits for its turn, which may belong to a `read`
        # whose pieces need hashing meanwhile
        self.hashing = ThreadPoolExecutor(1)  # `hash` requests, in order
        self.pieces = ThreadPoolExecutor(1)  # PieceHasher of `read` replies

    def serve(self) -> None:
        try:
            while True:
                line = self.inp.readline()
                if not line:
                    return
                req = json.loads(line)
                ticket = self.turns.take()
                getattr(self, "op_" + str(req.get("op")), self.op_unknown)(req, ticket)
        finally:
            self.hashing.shutdown(wait=True)  # their replies are due before we exit
            self.pieces.shutdown(wait=True)

    def answer(self, ticket: int, req: dict, work: Callable[[], dict]) -> None:
        self.turns.answer(ticket, f"{req.get('op')} {req.get('path', '')}".strip(), work)

    def op_unknown(self, req: dict, ticket: int) -> None:
        def work() -> dict:
            raise AgentError(f"unknown request {req.get('op')!r}")

        self.answer(ticket, req, work)

    def op_hello(self, req: dict, ticket: int) -> None:
        root = req.get("root")
        if root:
            self.root = self.writers.root = self.readers.root = os.path.normpath(os.path.expanduser(root))
        self.answer(ticket, req, lambda: {"ok": 1, "version": VERSION, "python": sys.version.split()[0]})

    def op_list(self, req: dict, ticket: int) -> None:
        self.answer(ticket, req, lambda: {"ok": 1, "files": list_files(req["path"], self.root)})

    def op_stat(self, req: dict, ticket: int) -> None:
        self.answer(ticket, req, lambda: {"ok": 1, "sizes": stat_sizes(req["paths"], self.root)})

    def op_prune(self, req: dict, ticket: int) -> None:
        self.answer(
            ticket, req, lambda: {"ok": 1, "deleted": prune_files(req["path"], req["keep"], self.root)}
        )

    def op_create(self, req: dict, ticket: int) -> None:
        def work() -> dict:  # in its turn: no hash of an earlier request still reads these files
            for path, _size in req["parts"]:
                self.writers.forget(path)
                self.readers.forget(path)
            create_parts(req["parts"], req.get("dirs", []), self.root)
            return {"ok": 1}

        self.answer(ticket, req, work)

    def op_write(self, req: dict, ticket: int) -> None:
        """Receive the bytes now (while earlier hashes run), reply in turn."""
        path, offset, size = req["path"], req["off"], req["size"]
        failure: AgentError | None = None
        try:
            fd: int | None = self.writers.get(path)
        except OSError as err:
            fd, failure = None, _oserror("write", path, err)
        except AgentError as err:  # a symlinked directory on the way
            fd, failure = None, err
        view = memoryview(self.bufs[0])
        end = offset + size
        while offset < end:
            n = self.inp.readinto(view[: min(len(view), end - offset)])
            if not n:
                raise SystemExit(1)  # the client went away mid-chunk
            if fd is not None:
                written = 0
                while written < n:
                    try:
                        written += os.pwrite(fd, view[written:n], offset + written)
                    except OSError as err:
                        fd, failure = None, _oserror("write", path, err)
                        break
            offset += n
        if fd is not None and req.get("settle"):  # nobody reads it back (unverified): let it go now
            self.writers.settle(fd, req["off"], size)

        def work() -> dict:
            if failure is not None:
                raise failure
            return {"ok": 1}

        self.answer(ticket, req, work)

    def op_hash(self, req: dict, ticket: int) -> None:
        path, offset, size = req["path"], req["off"], req["size"]

        def work() -> dict:
            try:
                fd = self.readers.get(path)
            except OSError as err:
                raise _oserror("read", path, err) from None
            digest = hash_fd(fd, offset, size, self.hash_buf)
            self.readers.settle(fd, offset, size)
            return {"ok": 1, "sha256": digest}

        self.hashing.submit(self.answer, ticket, req, work)

    def op_read(self, req: dict, ticket: int) -> None:
        self.answer(ticket, req, lambda: self.send_region(req))

    def send_region(self, req: dict) -> dict:
        """Reply ok, stream the region (hashed alongside), return the final reply."""
        path, offset, size = req["path"], req["off"], req["size"]
        try:
            fd = self.readers.get(path)
            have = os.fstat(fd).st_size
        except OSError as err:
            raise _oserror("read", path, err) from None
        if offset + size > have:
            raise AgentError(f"cannot read {path}: it has {have} bytes, expected at least {offset + size}")
        self.turns.write({"ok": 1})
        h = PieceHasher(self.pieces) if req.get("hash") else None
        sent = 0
        for piece in read_pieces(fd, offset, size, self.bufs):
            if h is not None:
                h.update(piece)
            self.out.write(piece)
            sent += len(piece)
        if sent < size:
            raise SystemExit(1)  # truncated under us: the client sees a lost connection
        return {"ok": 1, "sha256": h.hexdigest() if h is not None else None}

    def op_commit(self, req: dict, ticket: int) -> None:
        def work() -> dict:
            for part, _dest in req["pairs"]:
                self.writers.forget(part)
                self.readers.forget(part)
            commit_parts(req["pairs"], self.root)
            return {"ok": 1}

        self.answer(ticket, req, work)


def main() -> None:
    for fd in (0, 1):
        enlarge_pipe(fd)
    try:
        # nested, not parenthesized: servers may run Python 3.7
        with open(0, "rb", buffering=1 << 16, closefd=False) as inp:  # noqa: SIM117
            with open(1, "wb", buffering=PIECE, closefd=False) as out:
                Agent(inp, out).serve()
    except (BrokenPipeError, KeyboardInterrupt):
        pass  # the client went away: nothing left to answer
    except OSError as err:
        if err.errno != errno.EPIPE:
            raise


if __name__ == "__main__":
    main()
