"""Bounds on the work of checking one user query: tokens, nesting, and (for the API) time.

sqlglot's tokenizer, parser and generator are plain Python: an 80,000-character query took
29 s to check, and about 600 nested parentheses end in RecursionError. So a check spends
from a :class:`Budget`:

- at most ``TOKEN_BUDGET`` tokens per text it tokenizes (the user's query, then our
  rendering of it). The tokenizer stops at the first token over the budget, so refusing even
  a 100,000-character query costs a fraction of a second, not a full tokenization;
- parentheses at most ``MAX_PAREN_DEPTH`` deep (deeper nesting is refused before parsing;
  other nesting that exhausts Python's stack is caught as RecursionError by the caller);
- optionally a deadline (``time.monotonic()``), checked as the parser consumes tokens, the
  generator renders nodes and the checks walk the tree. The API sets one (a request must be
  answered in bounded time); the stages do not (the token budget already bounds their work,
  and a busy worker must not fail a task that the API accepted).

The hooks subclass sqlglot's classes the way dialects do. The tokenizer's core has
``__slots__``; where it is compiled (sqlglot[c]) it cannot be subclassed at all, and the
budget is then checked after a full tokenization (same answer, slower refusal).
"""

from __future__ import annotations

import contextlib
import functools
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ErrorLevel
from sqlglot.tokenizer_core import Token, TokenizerCore, TokenType

TOKEN_BUDGET = 20_000
MAX_PAREN_DEPTH = 40
# The API's limit for checking both queries of one request: with the token budget, a
# request is answered (201 or 422) in about this long, whatever it holds.
API_SECONDS = 1.5
ENCODED_TOKENS = 5  # `, CHR(39)` at least, for each character a string literal cannot hold
_CHECK_EVERY = 256  # time.monotonic() is cheap, but not free on every token


class OverBudget(Exception):  # noqa: N818 - an outcome, like StopIteration
    """The check ran out of budget; the message says which and what to do."""


@dataclass
class Budget:
    tokens: int = TOKEN_BUDGET
    seconds: float | None = None
    # the field being checked (set by the API's validator): named if the time runs out
    checking: str | None = None
    deadline: float | None = field(default=None, init=False)
    _ticks: int = field(default=0, init=False)
    _encoded: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.seconds is not None:
            self.deadline = time.monotonic() + self.seconds

    def fresh(self) -> Budget:
        """A budget for one more query: its own counts, the same deadline."""
        budget = Budget(tokens=self.tokens)
        budget.seconds, budget.deadline = self.seconds, self.deadline
        return budget

    def tick(self) -> None:
        """One unit of work done: every so often, see whether the time is up."""
        self._ticks += 1
        if self._ticks % _CHECK_EVERY == 0:
            self.check_time()

    def check_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise OverBudget(
                f"took more than {self.seconds:g} s to check (the request's limit for both queries); "
                "simplify the query"
            )

    def check_tokens(self, count: int) -> None:
        if count > self.tokens:
            raise OverBudget(
                f"is too large: more than {self.tokens:,} tokens (names, literals, operators); "
                "simplify the query"
            )

    def spend_encoded(self, count: int) -> None:
        """`count` more string characters rendered as CHR(n) or DECODE(UNHEX(..)) (five tokens
        or more each): refused before the rendering outgrows the token budget."""
        self._encoded += count
        if self._encoded * ENCODED_TOKENS > self.tokens:
            raise OverBudget(
                f"has too many quotes, backslashes or control characters in its strings (more than "
                f"{self.tokens // ENCODED_TOKENS:,}: each is sent as a function call); simplify the query"
            )


# The budget of the check running in this thread/task (the tokenizer's core has no room
# for an attribute of its own, see the module docstring).
_current: ContextVar[Budget | None] = ContextVar("fuxictr_sql_budget", default=None)


def _counting_core() -> type | None:
    """TokenizerCore that gives up at the first token over the current budget; None where
    the core is compiled and takes no Python subclass."""
    try:

        class CountingCore(TokenizerCore):
            __slots__ = ()  # TokenizerCore's layout, so a core can become one (see tokenize)

            def _add(self, token_type: TokenType, text: str | None = None) -> None:
                super()._add(token_type, text)
                budget = _current.get()
                if budget is not None:
                    budget.check_tokens(len(self.tokens))
                    budget.tick()

    except TypeError:
        return None
    return CountingCore


_CountingCore = _counting_core()


def tokenize(sql: str, dialect: Dialect, budget: Budget) -> list[Token]:
    """The dialect's tokens of `sql`; OverBudget past the token budget or the deadline."""
    tokenizer = dialect.tokenizer()
    core = tokenizer._core  # the one per-call object that does the scanning
    if _CountingCore is not None:
        with contextlib.suppress(TypeError):  # a compiled core: the count comes afterwards
            core.__class__ = _CountingCore
    reset = _current.set(budget)
    try:
        tokens = tokenizer.tokenize(sql)
    except Exception as err:  # the tokenizer wraps what _add raised in a TokenError
        if isinstance(err.__cause__, OverBudget):
            raise err.__cause__ from None
        raise
    finally:
        _current.reset(reset)
    budget.check_tokens(len(tokens))
    _check_depth(tokens)
    return tokens


OPENING = {TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE}
CLOSING = {TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE}


def _check_depth(tokens: list[Token]) -> None:
    depth = 0
    for token in tokens:
        if token.token_type in OPENING:
            depth += 1
            if depth > MAX_PAREN_DEPTH:
                raise OverBudget(
                    f"nests parentheses more than {MAX_PAREN_DEPTH} deep; flatten the query "
                    "(a WITH clause names a subquery instead of nesting it)"
                )
        elif token.token_type in CLOSING:
            depth -= 1


class _TimedParser:
    """Parser mix-in: the deadline is checked as tokens are consumed."""

    budget: Budget

    def _advance(self, times: int = 1) -> None:
        super()._advance(times)  # type: ignore[misc]
        self.budget.tick()


@functools.cache
def _parser_class(base: type) -> type:
    return type(f"Timed{base.__name__}", (_TimedParser, base), {})


def parse(tokens: list[Token], sql: str, dialect: Dialect, budget: Budget) -> list[Any]:
    """The trees of `tokens` (sqlglot's parse, with the deadline checked as it goes)."""
    parser = _parser_class(dialect.parser_class)(dialect=dialect, error_level=ErrorLevel.RAISE)
    parser.budget = budget
    return list(parser.parse(tokens, sql))


class TimedGenerator:
    """Generator mix-in: the deadline is checked for every node rendered."""

    budget: Budget

    def sql(self, *args: Any, **kwargs: Any) -> str:
        self.budget.tick()
        return super().sql(*args, **kwargs)  # type: ignore[misc]
