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
import time
from pathlib import Path
from typing import Any, Protocol

from fuxictr_workflow.ssh.servers import Endpoint
from fuxictr_workflow.ssh.ssh_access import is_refusal
from fuxictr_workflow.transfer import agent
from fuxictr_workflow.transfer.errors import ConnectionLost, TransferError

# Client preference order; the server picks the first one it supports.
CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr"
AGENT_SOURCE = Path(agent.__file__).read_text()
TRANSPORTS = ("auto", "openssh", "paramiko")


def agent_command(python: str) -> str:
    """The remote command line; `python` is a path, quoted like the agent source."""
    return f"exec {shlex.quote(python)} -S -c {shlex.quote(AGENT_SOURCE)}"


def pick_transport(transport: str = "auto", endpoint: Endpoint | None = None) -> str:
    """OpenSSH's ssh when installed and the connection suits it (no password, no passphrase:
    it runs without prompts), else paramiko."""
    if transport not in TRANSPORTS:
        raise TransferError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    unusable = endpoint.ssh.openssh_unusable() if endpoint is not None else None
    if transport == "auto":
        return "openssh" if shutil.which("ssh") and unusable is None else "paramiko"
    if transport == "openssh" and unusable is not None:
        raise TransferError(f"transport openssh cannot be used: {unusable}", retryable=False)
    return transport


class Channel(Protocol):
    def send(self, data: bytes | memoryview) -> None: ...
    def recv_into(self, view: memoryview) -> int: ...
    def failure(self) -> str: ...
    def close(self) -> None: ...


class Connection(Protocol):
    """One authenticated SSH connection; every agent session is a channel over it."""

    def open_session(self, command: str) -> Channel: ...
    def alive(self) -> bool: ...
    def close(self) -> None: ...


def _connect_error(message: str) -> TransferError:
    """A host key or authentication refusal is final; anything else is retried."""
    return TransferError(message, retryable=False) if is_refusal(message) else ConnectionLost(message)


def _stderr_tail(f: Any) -> str:
    """The last line an ssh process wrote to its stderr file ("" once the file is closed)."""
    try:
        f.seek(0)
        lines = f.read().decode(errors="replace").strip().splitlines()
    except ValueError:  # closed
        return ""
    return lines[-1] if lines else ""


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Wait for an ssh process told to end (stdin closed or SIGTERM); kill it after 5 s."""
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class OpenSshConnection:
    """An `ssh -M -N` master process; sessions are `ssh -S <socket>` clients multiplexed over it.

    One handshake per transfer instead of one per worker: a handshake costs as much wall
    and CPU time as moving tens of MB (docs/transfer.md).
    """

    def __init__(self, endpoint: Endpoint, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.where = f"{endpoint.username}@{endpoint.host}:{endpoint.port}"
        self.dir = tempfile.mkdtemp(prefix="fxw-ssh-")  # short: unix socket paths max ~108 bytes
        self.socket = os.path.join(self.dir, "mux")
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the connection
        self.last_error = "the SSH connection closed"
        self.ssh = shutil.which("ssh") or "ssh"
        self.proc = subprocess.Popen(
            [
                self.ssh,
                *endpoint.openssh_options(),
                "-o",
                f"Ciphers={CIPHERS}",
                "-o",
                "Compression=no",
                "-o",
                "ControlMaster=yes",
                "-o",
                "ControlPersist=no",
                "-S",
                self.socket,
                "-N",
                "-x",
                "-a",
                "-p",
                str(endpoint.port),
                "-l",
                endpoint.username,
                "--",  # the host comes from a connection: never read as an option
                endpoint.host,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            start_new_session=True,  # a Ctrl-C to the worker must not kill it mid-cleanup
        )
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                reason = _stderr_tail(self.stderr) or f"ssh gave up after {timeout:.0f}s"
                self.close()
                raise _connect_error(f"cannot connect to {self.where}: {reason}")
            time.sleep(0.005)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def failure(self) -> str:
        """Why the connection ended, as ssh told it (kept after close)."""
        self.last_error = _stderr_tail(self.stderr) or self.last_error
        return self.last_error

    def open_session(self, command: str) -> Channel:
        return OpenSshChannel(
            [
                self.ssh,
                "-S",
                self.socket,
                "-o",
                "ControlMaster=no",
                "-o",
                "BatchMode=yes",
                "-x",
                "-a",
                "-p",
                str(self.endpoint.port),
                "-l",
                self.endpoint.username,
                "--",
                self.endpoint.host,
                command,
            ],
            self,
        )

    def close(self) -> None:
        self.failure()
        if self.proc.poll() is None:
            self.proc.terminate()
        _reap(self.proc)
        self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class OpenSshChannel:
    """One `ssh` mux client process whose stdin/stdout are the agent's."""

    def __init__(self, argv: list[str], connection: OpenSshConnection) -> None:
        self.connection = connection
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the session
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
        if not self.connection.alive():
            return self.connection.failure()
        return _stderr_tail(self.stderr) or f"ssh exited with {self.proc.returncode}"

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        _reap(self.proc)
        self.stderr.close()


class ParamikoConnection:
    """The portable fallback: one paramiko Transport, one exec channel per session."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.where = f"{endpoint.username}@{endpoint.host}:{endpoint.port}"
        try:
            self.client = endpoint.paramiko_client()
        except Exception as err:
            raise _connect_error(f"cannot connect to {self.where}: {type(err).__name__}: {err}") from None
        self.transport = self.client.get_transport()

    def alive(self) -> bool:
        return bool(self.transport is not None and self.transport.is_active())

    def open_session(self, command: str) -> Channel:
        try:
            chan = self.transport.open_session(window_size=16 << 20, max_packet_size=1 << 15)
            chan.exec_command(command)
        except Exception as err:
            raise ConnectionLost(f"cannot open a session on {self.where}: {err}") from None
        return ParamikoChannel(chan)

    def close(self) -> None:
        self.client.close()


class ParamikoChannel:
    def __init__(self, chan: Any) -> None:
        self.chan = chan

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


def open_connection(endpoint: Endpoint, transport: str) -> Connection:
    """A new connection (ConnectionLost naming user@host:port when it cannot be made)."""
    if pick_transport(transport, endpoint) == "openssh":
        return OpenSshConnection(endpoint)
    return ParamikoConnection(endpoint)


class AgentClient:
    """The engine's end of one agent session: JSON requests, raw payloads, replies."""

    def __init__(self, channel: Channel, where: str) -> None:
        self.channel = channel
        self.where = where
        self._buf = bytearray()
        self._recv = bytearray(agent.PIECE)

    @classmethod
    def start(cls, connection: Connection, endpoint: Endpoint) -> AgentClient:
        """Start an agent session and check it answers."""
        where = f"{endpoint.username}@{endpoint.host}:{endpoint.port}"
        channel = connection.open_session(agent_command(endpoint.python))
        client = cls(channel, where)
        try:
            client.call({"op": "hello", "root": endpoint.remote_root})
        except ConnectionLost:
            reason = channel.failure()
            client.close()
            raise ConnectionLost(f"cannot start the transfer agent on {where}: {reason}") from None
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
