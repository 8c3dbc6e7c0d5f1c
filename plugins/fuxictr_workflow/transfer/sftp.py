"""A minimal SFTP v3 client for the data path: open, pipelined reads and writes, close.

Why: OpenSSH serves SFTP inside sshd (``internal-sftp``) or in ``sftp-server``, which
read and write the file themselves; the bytes then skip the agent and its pipe on the
server (a copy and two context switches fewer per byte: what made scp's download faster
than ours), and the subsystem starts without the login shell. The agent still creates,
hashes and commits the files. Requests for a whole chunk go out at once; replies are
handled in any order (the protocol allows reordering): read data is written at its
offset, a short read asks again for the rest, a write is done once acknowledged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from fuxictr_workflow.transfer import agent
from fuxictr_workflow.transfer.channel import Channel, ChannelStream
from fuxictr_workflow.transfer.errors import ConnectionLost, TransferError

INIT, VERSION, OPEN, CLOSE, READ, WRITE = 1, 2, 3, 4, 5, 6
EXTENDED, STATUS, HANDLE, DATA, EXTENDED_REPLY = 200, 101, 102, 103, 201
OK, EOF = 0, 1
FXF_READ, FXF_WRITE = 0x1, 0x2
STATUS_NAMES = {2: "no such file", 3: "permission denied", 4: "failure", 8: "operation unsupported"}
DEFAULT_IO = 32 * 1024  # what every SFTP server serves; OpenSSH reports more (limits@openssh.com)
MAX_IO = 1 << 20
MAX_HANDLES = 16


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


@dataclass
class _Region:
    """A chunk's requests still unanswered: request id → (offset, length)."""

    path: str
    handle: bytes
    fd: int  # where read data goes (-1 for writes)
    pending: dict[int, tuple[int, int]] = field(default_factory=dict)


class SftpClient(ChannelStream):
    """One SFTP session. Downloads: `request(key, ...)` then `complete(key)`; uploads:
    `begin_write(key, path)`, `write(key, data, offset)`..., then `complete(key)`."""

    def __init__(self, channel: Channel, where: str) -> None:
        super().__init__(channel, where)
        self.next_id = 0
        self.read_size = self.write_size = DEFAULT_IO
        self.handles: dict[tuple[str, int], bytes] = {}
        self.regions: dict[object, _Region] = {}
        self.owner: dict[int, object] = {}  # request id → region key
        self.header = memoryview(bytearray(13))
        self.buf = bytearray(MAX_IO)

    @classmethod
    def start(cls, channel: Channel, where: str) -> SftpClient:
        client = cls(channel, where)
        try:
            client.send(struct.pack(">IBI", 5, INIT, 3))
            head = bytearray(5)
            client.read_exact_into(memoryview(head))
            length, kind = struct.unpack(">IB", head)
            payload = bytearray(length - 1)
            client.read_exact_into(memoryview(payload))
            if kind != VERSION:
                raise client._lost(f"SFTP: expected VERSION, got packet type {kind}")
            if b"limits@openssh.com" in payload:
                client._limits()
        except ConnectionLost:
            client.close()
            raise
        return client

    # -- control requests (one at a time; region replies that come first are handled) --

    def _id(self) -> int:
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF
        return self.next_id

    def _call(self, kind: int, body: bytes) -> tuple[int, bytes]:
        rid = self._id()
        self.send(struct.pack(">IBI", len(body) + 5, kind, rid) + body)
        while True:
            got = self._receive()
            if got is not None:
                reply, got_id, payload = got
                if got_id != rid:
                    raise self._lost(f"SFTP: reply to request {got_id}, expected {rid}")
                return reply, payload

    def _status_error(self, payload: bytes, what: str) -> TransferError:
        (code,) = struct.unpack(">I", payload[:4])
        (n,) = struct.unpack(">I", payload[4:8])
        message = payload[8 : 8 + n].decode(errors="replace") or STATUS_NAMES.get(code, f"status {code}")
        return TransferError(f"{self.where}: cannot {what}: {message}", retryable=False)

    def _limits(self) -> None:
        kind, payload = self._call(EXTENDED, _string(b"limits@openssh.com"))
        if kind == EXTENDED_REPLY:
            _packet, max_read, max_write, _handles = struct.unpack(">QQQQ", payload[:32])
            self.read_size = min(int(max_read), MAX_IO) if max_read else DEFAULT_IO
            self.write_size = min(int(max_write), MAX_IO) if max_write else DEFAULT_IO

    def handle(self, path: str, mode: int = FXF_READ) -> bytes:
        """An open handle for `path` (kept for the session; beyond MAX_HANDLES the oldest idle
        ones are closed: servers limit them). Writes go into an existing file (the agent
        created it at its final size)."""
        found = self.handles.get((path, mode))
        if found is None:
            busy = {r.handle for r in self.regions.values()}
            idle = [k for k, h in self.handles.items() if h not in busy]
            for old in idle[: max(0, len(self.handles) - MAX_HANDLES)]:
                kind, payload = self._call(CLOSE, _string(self.handles.pop(old)))
                if kind != STATUS or struct.unpack(">I", payload[:4])[0] != OK:
                    raise self._status_error(payload, f"close {old[0]}")
            kind, payload = self._call(OPEN, _string(path.encode()) + struct.pack(">II", mode, 0))
            if kind != HANDLE:
                raise self._status_error(payload, f"{'write' if mode & FXF_WRITE else 'read'} {path}")
            (n,) = struct.unpack(">I", payload[:4])
            found = self.handles[(path, mode)] = payload[4 : 4 + n]
        return found

    # -- regions --

    def request(self, key: object, path: str, fd: int, offset: int, size: int) -> None:
        """Ask for `size` bytes of `path` at `offset`, to be written into `fd` at the same offset."""
        region = self.regions[key] = _Region(path, self.handle(path), fd)
        out = bytearray()
        end = offset + size
        while offset < end:
            n = min(self.read_size, end - offset)
            out += self._read_packet(key, region, offset, n)
            offset += n
        self.send(out)

    def _read_packet(self, key: object, region: _Region, offset: int, n: int) -> bytes:
        rid = self._track(key, region, offset, n)
        body = _string(region.handle) + struct.pack(">QI", offset, n)
        return struct.pack(">IBI", len(body) + 5, READ, rid) + body

    def _track(self, key: object, region: _Region, offset: int, n: int) -> int:
        rid = self._id()
        region.pending[rid] = (offset, n)
        self.owner[rid] = key
        return rid

    def begin_write(self, key: object, path: str) -> None:
        self.regions[key] = _Region(path, self.handle(path, FXF_WRITE), -1)

    def write(self, key: object, data: memoryview, offset: int) -> None:
        """Send `data` to be written at `offset` of the region's file (acknowledged later)."""
        region = self.regions[key]
        for start in range(0, len(data), self.write_size):
            piece = data[start : start + self.write_size]
            rid = self._track(key, region, offset + start, len(piece))
            head = _string(region.handle) + struct.pack(">QI", offset + start, len(piece))
            self.send(struct.pack(">IBI", len(head) + len(piece) + 5, WRITE, rid) + head)
            self.send(piece)

    def complete(self, key: object) -> None:
        """Handle replies until every request of region `key` is answered (replies for later
        regions are handled as they come too). OSError: writing the local file failed."""
        region = self.regions[key]
        while region.pending:
            if self._receive() is not None:
                raise self._lost("SFTP: a reply to no request in flight")
        del self.regions[key]

    def _receive(self) -> tuple[int, int, bytes] | None:
        """Take the next packet: a region request's reply is handled (None), any other is
        returned as (type, request id, payload after the id)."""
        self.read_exact_into(self.header[:9])
        length, kind, rid = struct.unpack(">IBI", self.header[:9])
        owner = self.owner.pop(rid, None)
        if owner is None:
            payload = bytearray(length - 5)
            self.read_exact_into(memoryview(payload))
            return kind, rid, bytes(payload)
        region = self.regions[owner]
        offset, want = region.pending.pop(rid)
        if kind == DATA:
            self.read_exact_into(self.header[9:13])
            (n,) = struct.unpack(">I", self.header[9:13])
            if n > want or n > len(self.buf):
                raise self._lost(f"SFTP: {n} bytes for a read of {want}")
            view = memoryview(self.buf)[:n]
            self.read_exact_into(view)
            agent.pwrite_all(region.fd, view, offset)
            if n < want:  # a short read: ask again for the rest
                self.send(self._read_packet(owner, region, offset + n, want - n))
            return None
        payload = bytearray(length - 5)
        self.read_exact_into(memoryview(payload))
        code = struct.unpack(">I", payload[:4])[0] if kind == STATUS else None
        if region.fd < 0 and code == OK:
            return None  # a write acknowledged
        if region.fd >= 0 and code == EOF:
            raise TransferError(
                f"cannot read {region.path}: it ends before offset {offset + want} (it shrank on the server)",
                retryable=False,
            )
        what = f"write {region.path}" if region.fd < 0 else f"read {region.path}"
        raise self._status_error(bytes(payload), what)
