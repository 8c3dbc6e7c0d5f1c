"""Transfer errors. `retryable` tells the caller whether running the stage again can help."""

from __future__ import annotations


class TransferError(RuntimeError):
    """A transfer failed; the message says what, where (host:port or path) and why."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ConnectionLost(TransferError):
    """The SSH session could not be opened or broke mid-request (retried by the engine)."""


class UnsafePath(TransferError):
    """A path escapes the configured local or remote root; refused before connecting."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)
