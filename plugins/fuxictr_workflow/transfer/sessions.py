"""The transfer's agent sessions, and the two sides' file operations.

One SSH connection carries every session of a transfer. Sessions for the workers are
started while the transfer plans (prefetched), handed out once each, and the ones the
workers give back are closed at the end. Both sides run the same agent functions: this
side's in process, the server's over a session.
"""

from __future__ import annotations

import ipaddress
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type, stop_after_attempt

from fuxictr_workflow.ssh.servers import Endpoint
from fuxictr_workflow.transfer import agent
from fuxictr_workflow.transfer.channel import AgentClient, Connection, open_connection
from fuxictr_workflow.transfer.errors import ConnectionLost, TransferError
from fuxictr_workflow.transfer.params import TransferParams


def stream_count(configured: int, host: str) -> int:
    """Parallel sessions worth opening to `host`: `configured`, except on loopback.

    Between two hosts a stream is bounded by one channel's window / RTT, so parallel
    sessions add throughput. On loopback every stream's ssh, sshd, agent and worker share
    the one host's CPUs (one stream keeps about two busy), and more streams only add
    context switches, shell start-ups and lock contention on the destination file.
    """
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return configured
    return max(1, min(configured, (os.cpu_count() or 1) // 2))


class Files(Protocol):
    """A side's file operations (see the agent's functions of the same names)."""

    def list(self, path: str) -> list[list[Any]]: ...
    def stat(self, paths: list[str]) -> list[int | None]: ...
    def create(self, parts: list[list[Any]], dirs: list[str]) -> None: ...
    def commit(self, pairs: list[list[str]]) -> None: ...
    def prune(self, path: str, keep: list[str]) -> list[str]: ...


class LocalFiles:
    def _do(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except agent.AgentError as err:
            raise TransferError(f"local: {err}", retryable=False) from None

    def list(self, path: str) -> list[list[Any]]:
        return self._do(agent.list_files, path)

    def stat(self, paths: list[str]) -> list[int | None]:
        return self._do(agent.stat_sizes, paths)

    def create(self, parts: list[list[Any]], dirs: list[str]) -> None:
        self._do(agent.create_parts, parts, dirs)

    def commit(self, pairs: list[list[str]]) -> None:
        self._do(agent.commit_parts, pairs)

    def prune(self, path: str, keep: list[str]) -> list[str]:
        return self._do(agent.prune_files, path, keep)


class RemoteFiles:
    """Control requests on one session, reconnecting (with the retry schedule) when it drops."""

    def __init__(self, connect: Callable[[], AgentClient], client: AgentClient | None) -> None:
        self.connect = connect
        self.client = client

    def _call(self, req: dict[str, Any]) -> dict[str, Any]:
        for _ in range(2):
            if self.client is None:
                self.client = self.connect()
            try:
                return self.client.call(req)
            except ConnectionLost:
                self.client.close()
                self.client = None
        self.client = self.connect()
        return self.client.call(req)

    def list(self, path: str) -> list[list[Any]]:
        return self._call({"op": "list", "path": path})["files"]

    def stat(self, paths: list[str]) -> list[int | None]:
        return self._call({"op": "stat", "paths": paths})["sizes"]

    def create(self, parts: list[list[Any]], dirs: list[str]) -> None:
        self._call({"op": "create", "parts": parts, "dirs": dirs})

    def commit(self, pairs: list[list[str]]) -> None:
        self._call({"op": "commit", "pairs": pairs})

    def prune(self, path: str, keep: list[str]) -> list[str]:
        return self._call({"op": "prune", "path": path, "keep": keep})["deleted"]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class Connector:
    """The transfer's one SSH connection, re-made (by one thread, others wait) when it drops."""

    def __init__(self, endpoint: Endpoint, transport: str) -> None:
        self.endpoint = endpoint
        self.transport = transport
        self.lock = threading.Lock()
        self.conn: Connection | None = None

    def session(self) -> AgentClient:
        with self.lock:
            if self.conn is not None and not self.conn.alive():
                self.conn.close()
                self.conn = None
            if self.conn is None:
                self.conn = open_connection(self.endpoint, self.transport)
            conn = self.conn
        return AgentClient.start(conn, self.endpoint)

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None


class SessionPool:
    """Agent sessions over the transfer's connection: new ones (retried, or not), spares
    started ahead for the workers, and the ones workers give back."""

    def __init__(self, params: TransferParams, transport: str) -> None:
        self.params = params
        self.connector = Connector(params.endpoint, transport)
        self.lock = threading.Lock()
        self.spare: queue.SimpleQueue[AgentClient | None] = queue.SimpleQueue()
        self.prefetching: list[threading.Thread] = []
        self.spares_left = 0
        self.returned: list[AgentClient] = []

    def session(self) -> AgentClient:
        """A new session, or ConnectionLost (the caller retries the chunks it was for)."""
        return self.connector.session()

    def connect(self) -> AgentClient:
        """A new session, retried up to max_retries with backoff."""
        p = self.params
        attempts = p.cfg.max_retries + 1

        def say_retry(state: RetryCallState) -> None:
            assert state.outcome is not None and state.next_action is not None
            err = state.outcome.exception()
            p.log.warning(
                f"{err}; retry {state.attempt_number}/{p.cfg.max_retries} in {state.next_action.sleep:.1f}s"
            )

        retrying = Retrying(
            retry=retry_if_exception_type(ConnectionLost),
            stop=stop_after_attempt(attempts),
            wait=lambda state: p.backoff(state.attempt_number - 1),
            before_sleep=say_retry,
        )
        try:
            return retrying(self.connector.session)
        except RetryError as gave_up:
            raise TransferError(
                f"{gave_up.last_attempt.exception()} (gave up after {attempts} attempts)"
            ) from None

    def prefetch(self, n: int) -> None:
        """Start `n` sessions in the background, one for each worker after the first."""

        def one() -> None:
            try:
                self.spare.put(self.connector.session())
            except TransferError:
                self.spare.put(None)  # the worker will connect (and retry) itself

        self.spares_left = n
        self.prefetching = [threading.Thread(target=one, daemon=True) for _ in range(n)]
        for t in self.prefetching:
            t.start()

    def take_spare(self) -> AgentClient | None:
        """A prefetched session (waiting for it to start), or None when none is left or it failed."""
        with self.lock:
            if self.spares_left == 0:
                return None
            self.spares_left -= 1
        return self.spare.get()

    def give_back(self, client: AgentClient) -> None:
        """A worker is done with a session that has no replies due: reusable."""
        with self.lock:
            self.returned.append(client)

    def take_returned(self) -> AgentClient | None:
        return self.returned.pop() if self.returned else None

    def close(self) -> None:
        for t in self.prefetching:
            t.join()
        while not self.spare.empty():
            spare = self.spare.get()
            if spare is not None:
                spare.close()
        for client in self.returned:
            client.close()
        self.connector.close()
