"""The SFTP client's protocol logic against a deliberately awkward server.

OpenSSH answers reads in order and in full, so the real-sshd tests never see what the
protocol allows: replies out of order, short reads, EOF inside a region. A small
in-process SFTP server over a socketpair does all three (pure protocol logic: the data
path itself is covered against the real sshd in test_transfer.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuxictr_workflow.transfer import sftp
from fuxictr_workflow.transfer.errors import TransferError

pytestmark = pytest.mark.timeout(30)


class SocketChannel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, data: bytes | memoryview) -> None:
        self.sock.sendall(data)

    def recv_into(self, view: memoryview) -> int:
        return self.sock.recv_into(view)

    def failure(self) -> str:
        return "test server closed"

    def close(self) -> None:
        self.sock.close()


class AwkwardServer(threading.Thread):
    """Serves `files` read-only: answers reads two at a time in reverse order, at most
    `short` bytes each; counts open handles."""

    def __init__(self, sock: socket.socket, files: dict[str, bytes], short: int) -> None:
        super().__init__(daemon=True)
        self.sock, self.files, self.short = sock, files, short
        self.handles: dict[bytes, str] = {}
        self.most_open = 0
        self.held: list[bytes] = []

    def packet(self) -> tuple[int, bytes] | None:
        head = self.sock.recv(5, socket.MSG_WAITALL)
        if len(head) < 5:
            return None
        length, kind = struct.unpack(">IB", head)
        return kind, self.sock.recv(length - 1, socket.MSG_WAITALL) if length > 1 else b""

    def reply(self, kind: int, rid: int, body: bytes) -> bytes:
        return struct.pack(">IBI", len(body) + 5, kind, rid) + body

    def status(self, rid: int, code: int) -> bytes:
        return self.reply(sftp.STATUS, rid, struct.pack(">I", code) + sftp._string(b"") + sftp._string(b""))

    def run(self) -> None:
        with contextlib.suppress(OSError):  # the client went away (the EOF test leaves replies unread)
            self.serve()

    def serve(self) -> None:
        while (got := self.packet()) is not None:
            kind, body = got
            if kind == sftp.INIT:
                self.sock.sendall(struct.pack(">IBI", 5, sftp.VERSION, 3))
                continue
            (rid,) = struct.unpack(">I", body[:4])
            if kind == sftp.OPEN:
                (n,) = struct.unpack(">I", body[4:8])
                handle = os.urandom(4)
                self.handles[handle] = body[8 : 8 + n].decode()
                self.most_open = max(self.most_open, len(self.handles))
                self.sock.sendall(self.reply(sftp.HANDLE, rid, sftp._string(handle)))
            elif kind == sftp.CLOSE:
                self.handles.pop(body[8:12])
                self.sock.sendall(self.status(rid, sftp.OK))
            elif kind == sftp.READ:
                handle = body[8:12]
                offset, length = struct.unpack(">QI", body[12:24])
                data = self.files[self.handles[handle]][offset : offset + min(length, self.short)]
                out = self.reply(sftp.DATA, rid, sftp._string(data)) if data else self.status(rid, sftp.EOF)
                self.held.append(out)
                if len(self.held) == 2:  # the later request is answered first
                    self.sock.sendall(self.held[1] + self.held[0])
                    self.held.clear()
                elif not self.more_waiting():
                    self.sock.sendall(self.held.pop())

    def more_waiting(self) -> bool:
        import select

        return bool(select.select([self.sock], [], [], 0.05)[0])


@pytest.fixture
def files() -> dict[str, bytes]:
    return {f"/data/f{i}": os.urandom(100_000 + i) for i in range(sftp.MAX_HANDLES + 4)}


@pytest.fixture
def client_and_server(files: dict[str, bytes]) -> Iterator[tuple[sftp.SftpClient, AwkwardServer]]:
    a, b = socket.socketpair()
    server = AwkwardServer(b, files, short=7_000)
    server.start()
    client = sftp.SftpClient.start(SocketChannel(a), "test")
    client.read_size = 16_384  # the server answers 7,000 bytes of each: every read is short
    yield client, server
    client.close()
    server.join(timeout=5)
    b.close()


def test_reordered_short_replies_land_at_their_offsets(
    client_and_server: tuple[sftp.SftpClient, AwkwardServer], files: dict[str, bytes], tmp_path: Path
) -> None:
    client, server = client_and_server
    for path, data in files.items():
        local = tmp_path / path.rsplit("/", 1)[1]
        fd = os.open(local, os.O_RDWR | os.O_CREAT)
        try:
            half = len(data) // 2  # two regions in flight at once, as the engine pipelines them
            client.request((path, 0), path, fd, 0, half)
            client.request((path, 1), path, fd, half, len(data) - half)
            client.complete((path, 0))
            client.complete((path, 1))
        finally:
            os.close(fd)
        assert local.read_bytes() == data, path
    assert server.most_open <= sftp.MAX_HANDLES + 1  # idle handles are closed as files go by


def test_a_region_past_the_end_of_file_is_a_clear_error(
    client_and_server: tuple[sftp.SftpClient, AwkwardServer], files: dict[str, bytes], tmp_path: Path
) -> None:
    client, _ = client_and_server
    path, data = next(iter(files.items()))
    fd = os.open(tmp_path / "x", os.O_RDWR | os.O_CREAT)
    try:
        client.request("k", path, fd, 0, len(data) + 10)
        with pytest.raises(TransferError, match="shrank on the server") as err:
            client.complete("k")
        assert not err.value.retryable
    finally:
        os.close(fd)
