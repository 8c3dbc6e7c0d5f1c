"""Why the store refused an operation."""

from __future__ import annotations


class StoreError(Exception):
    """A store operation was refused (unknown task, illegal transition)."""


class NotFound(StoreError):
    pass


class IllegalTransition(StoreError):
    pass
