"""SSH sessions running the transfer agent, and the client side of its protocol.

Two transports carry the same protocol:

- ``openssh``: the system ``ssh`` binary, one process per session, AES-GCM preferred.
  OpenSSH's C crypto (AES-NI) and its pipes are several times faster than Python's SSH
  stacks on the same CPU (see docs/transfer.md), so this is the default when ``ssh``
  exists.
- ``paramiko``: the portable fallback (no ``ssh`` binary on the worker).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Protocol

from fuxictr_workflow.servers import Endpoint
from fuxictr_workflow.transfer import agent
from fuxictr_workflow.transfer.errors import ConnectionLost, TransferError

# Client preference order; the server picks the first one it supports.
CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr"
AGENT_SOURCE = Path(agent.__file__).read_text()
TRANSPORTS = ("auto", "openssh", "paramiko")


def agent_command(python: str) -> str:
    """The remote command line; `python` is a path, quoted like the agent source."""
    return f"exec {shlex.quote(python)} -S -c {shlex.quote(AGENT_SOURCE)}"


def pick_transport(transport: str = "auto") -> str:
    if transport not in TRANSPORTS:
        raise TransferError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    if transport == "auto":
        return "openssh" if shutil.which("ssh") else "paramiko"
    return transport


class Channel(Protocol):
    def send(self, data: bytes | memoryview) -> None: ...
    def recv_into(self, view: memoryview) -> int: ...
    def failure(self) -> str: ...
    def close(self) -> None: ...


class OpenSshChannel:
    """One `ssh` process whose stdin/stdout are the agent's."""

    def __init__(self, endpoint: Endpoint, command: str) -> None:
        self.where = f"{endpoint.host}:{endpoint.port}"
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the session
        argv = [
            shutil.which("ssh") or "ssh",
            *endpoint.openssh_options(),
            "-o",
            f"Ciphers={CIPHERS}",
            "-o",
            "Compression=no",
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
            "-o",
            "RequestTTY=no",
            "-x",
            "-a",
            "-p",
            str(endpoint.port),
            "-l",
            endpoint.username,
            endpoint.host,
            command,
        ]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, bufsize=0
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin_fd = self.proc.stdin.fileno()
        self.stdout_fd = self.proc.stdout.fileno()
        agent.enlarge_pipe(self.stdin_fd)
        agent.enlarge_pipe(self.stdout_fd)

    def send(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.stdin_fd, view)
            view = view[n:]

    def recv_into(self, view: memoryview) -> int:
        return os.readv(self.stdout_fd, [view])

    def failure(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2)
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace").strip()
        return text.splitlines()[-1] if text else f"ssh exited with {self.proc.returncode}"

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


class ParamikoChannel:
    """A paramiko exec channel running the agent (one SSH connection per channel)."""

    def __init__(self, endpoint: Endpoint, command: str) -> None:
        self.where = f"{endpoint.host}:{endpoint.port}"
        try:
            self.client = endpoint.paramiko_client()
            transport = self.client.get_transport()
            self.chan = transport.open_session(window_size=64 << 20, max_packet_size=1 << 15)
            self.chan.exec_command(command)
        except Exception as err:
            raise ConnectionLost(f"cannot connect to {self.where}: {type(err).__name__}: {err}") from None

    def send(self, data: bytes | memoryview) -> None:
        self.chan.sendall(data)

    def recv_into(self, view: memoryview) -> int:
        data = self.chan.recv(len(view))
        view[: len(data)] = data
        return len(data)

    def failure(self) -> str:
        text = b""
        while self.chan.recv_stderr_ready():
            text += self.chan.recv_stderr(65536)
        lines = text.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "the SSH session closed"

    def close(self) -> None:
        self.chan.close()
        self.client.close()


class AgentClient:
    """The engine's end of one agent session: JSON requests, raw payloads, replies."""

    def __init__(self, channel: Channel, where: str) -> None:
        self.channel = channel
        self.where = where
        self._buf = bytearray()
        self._recv = bytearray(agent.PIECE)

    @classmethod
    def connect(cls, endpoint: Endpoint, transport: str = "auto") -> AgentClient:
        """Open a session and check the agent answers; ConnectionLost names host and port."""
        command = agent_command(endpoint.python)
        where = f"{endpoint.username}@{endpoint.host}:{endpoint.port}"
        kind = pick_transport(transport)
        channel: Channel = (
            OpenSshChannel(endpoint, command) if kind == "openssh" else ParamikoChannel(endpoint, command)
        )
        client = cls(channel, where)
        try:
            client.call({"op": "hello"})
        except ConnectionLost:
            reason = channel.failure()
            client.close()
            raise ConnectionLost(f"cannot connect to {where}: {reason}") from None
        return client

    def _lost(self, what: str) -> ConnectionLost:
        return ConnectionLost(f"connection to {self.where} lost ({what}): {self.channel.failure()}")

    # -- raw I/O --

    def send(self, data: bytes | memoryview) -> None:
        try:
            self.channel.send(data)
        except OSError as err:
            raise self._lost(f"send: {err.strerror or err}") from None

    def send_request(self, req: dict[str, Any]) -> None:
        self.send(json.dumps(req).encode() + b"\n")

    def _fill(self) -> None:
        try:
            n = self.channel.recv_into(memoryview(self._recv))
        except OSError as err:
            raise self._lost(f"receive: {err.strerror or err}") from None
        if n == 0:
            raise self._lost("end of stream")
        self._buf += memoryview(self._recv)[:n]

    def read_reply(self) -> dict[str, Any]:
        """The next reply; an agent-side failure becomes a non-retryable TransferError."""
        while (end := self._buf.find(b"\n")) < 0:
            self._fill()
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        try:
            reply = json.loads(line)
        except ValueError:
            raise self._lost(f"unexpected output {line[:200]!r}") from None
        if not reply.get("ok"):
            raise TransferError(f"{self.where}: {reply.get('error')}", retryable=False)
        return reply

    def read_exact_into(self, view: memoryview) -> None:
        """Fill `view` with the next payload bytes (buffered bytes first, then the channel)."""
        have = min(len(self._buf), len(view))
        if have:
            view[:have] = self._buf[:have]
            del self._buf[:have]
        while have < len(view):
            try:
                n = self.channel.recv_into(view[have:])
            except OSError as err:
                raise self._lost(f"receive: {err.strerror or err}") from None
            if n == 0:
                raise self._lost("end of stream")
            have += n

    def call(self, req: dict[str, Any]) -> dict[str, Any]:
        self.send_request(req)
        return self.read_reply()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken session must not mask the real error
            self.channel.close()
