"""Why the store refused an operation."""

from __future__ import annotations


class StoreError(Exception):
    """A store operation was refused (unknown task, illegal transition)."""


class NotFound(StoreError):
    pass


class IllegalTransition(StoreError):
    pass


class StaleAttempt(IllegalTransition):
    """An attempt at a step reported after a later attempt had started the step again (a try
    Airflow gave up on, still ending in its process): the later attempt owns the step."""
