"""The one query a user may give (sample_sql / infer_sql): parsed, checked, re-rendered.

The text is parsed with sqlglot in the server's dialect (config `hive.sql_dialect`). It is
accepted only if it is exactly one query (SELECT, WITH ... SELECT, a set operation of
those) whose tree holds no statement of another kind, no TRANSFORM/MAP/REDUCE ... USING
(runs a program on the server), no function outside `sql_functions.ALLOWED` (`reflect`,
`java_method` and user functions call Java code) and no table read from a path instead of
a name. `${` is refused anywhere in the text: Hive and Spark substitute `${env:...}`,
`${system:...}`, `${hiveconf:...}` before parsing, which would leak server settings.

What goes to Hive is sqlglot's rendering of the accepted tree, without comments or
optimizer hints, on one line, and written so that no client-side parser can read it
differently from the server: beeline drops `--` "comments" with a quote tracker that takes
`\\'` for an escaped quote, splits statements on `;` with another, and runs `!` lines as
client commands. So names are letters, digits and `_` only, and a string literal holding
a backslash, a quote, a backtick or a control character is rendered as CONCAT of plain
pieces and CHR(n): the text then has no backslash, no `"`, no line break, and every quote
closes where every reader thinks it does. The rendering is parsed and checked once more.
"""

from __future__ import annotations

import re
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ErrorLevel, SqlglotError

from fuxictr_workflow.sql_functions import ALLOWED, DENIED

SQL_MAX = 100_000
DIALECTS = ("hive", "spark")
# Every name (database, table, column, alias): letters, digits, `_`. A quoted table name
# with `/` in it is a path (Spark reads `parquet.`/any/file``), never a table.
NAME = re.compile(r"^\w+$")
# Characters a string literal's rendering must not contain (see the module docstring).
UNSAFE_IN_STRING = re.compile(r"([\\'\"`\x00-\x1f\x7f])")
# The setting that turns `${...}` substitution off, per dialect.
SUBSTITUTION_SETTING = {"hive": "hive.variable.substitute", "spark": "spark.sql.variable.substitute"}
# Statement and clause kinds a read-only query never contains.
FORBIDDEN: tuple[tuple[type[exp.Expression], str], ...] = (
    (exp.QueryTransform, "TRANSFORM/MAP/REDUCE ... USING (it runs a program on the server)"),
    (exp.DDL, "a DDL statement"),
    (exp.DML, "a statement that writes data"),
    (exp.Command, "a command"),
    (exp.Into, "SELECT ... INTO"),
    (exp.Placeholder, "a bind parameter"),
    (exp.Parameter, "a session parameter"),
    (exp.Set, "SET"),
    (exp.Use, "USE"),
)


class QueryError(ValueError):
    """The query is not accepted; the message names the construct."""


class _NameRecorder:
    """Generator mix-in: the name of every function call the rendering contains."""

    called: list[str]

    def func(self, name: str, *args: Any, **kwargs: Any) -> str:
        self.called.append(name)
        return super().func(name, *args, **kwargs)  # type: ignore[misc]


def _dialect(name: str) -> Dialect:
    if name not in DIALECTS:
        raise QueryError(f"unknown SQL dialect {name!r}; one of {', '.join(DIALECTS)}")
    return Dialect.get_or_raise(name)


def _render(tree: exp.Expression, dialect: Dialect) -> tuple[str, list[str]]:
    base = type(dialect.generator())
    generator_class = type(f"Recording{base.__name__}", (_NameRecorder, base), {})
    generator = generator_class(
        dialect=dialect, comments=False, pretty=False, unsupported_level=ErrorLevel.RAISE
    )
    generator.called = []
    return generator.generate(tree), [n.lower() for n in generator.called]


def _parse(sql: str, dialect: Dialect) -> exp.Expression:
    try:
        trees = [
            t for t in sqlglot.parse(sql, dialect=dialect, error_level=ErrorLevel.RAISE) if t is not None
        ]
    except SqlglotError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise QueryError(f"is not a query the parser understands ({first})") from None
    if not trees:
        raise QueryError("must be a SELECT query")
    if len(trees) > 1:
        raise QueryError(f"must be one statement; found {len(trees)} (remove everything after the first ';')")
    return trees[0]


def _check_tree(tree: exp.Expression) -> None:
    root = tree.this if isinstance(tree, exp.Subquery) else tree
    if not isinstance(root, (exp.Select, exp.SetOperation)):
        kind = tree.key.upper() if not isinstance(tree, exp.Command) else str(tree.this).upper()
        raise QueryError(f"must be a SELECT (or WITH ... SELECT) query, not {kind}")
    for node in tree.walk():
        for kind, what in FORBIDDEN:
            if isinstance(node, kind):
                raise QueryError(f"must only read data; {what} is not allowed")
        if isinstance(node, exp.Anonymous) and isinstance(node.parent, exp.Dot):
            raise QueryError(
                f"calls the user function {node.parent.sql()!r}; only built-in functions are allowed"
            )
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
            for part in node.parts:
                if not NAME.match(part.name):
                    raise QueryError(
                        f"reads {node.sql()!r}: tables are named by database.table, never by a path"
                    )
        if isinstance(node, (exp.Identifier, exp.Var)) and not NAME.match(node.name):
            raise QueryError(f"uses the name {node.name!r}; names may only use letters, digits and '_'")


def _check_functions(called: list[str]) -> None:
    for name in called:
        if name in DENIED:
            raise QueryError(f"calls {name}(), which {DENIED[name]}; it is not allowed")
        if name not in ALLOWED:
            raise QueryError(f"calls {name}(), which is not an allowed built-in function")


def _drop_hints(tree: exp.Expression) -> None:
    """Optimizer hints only steer join planning; they are rendered as comments, so they go."""
    for hint in list(tree.find_all(exp.Hint)):
        hint.pop()


def _plain_strings(node: exp.Expression) -> exp.Expression:
    """A string literal with a character beeline may misread becomes CONCAT('..', CHR(n), '..')."""
    if isinstance(node, exp.RawString):
        node = exp.Literal.string(node.name)
    if not (isinstance(node, exp.Literal) and node.is_string and UNSAFE_IN_STRING.search(node.this)):
        return node
    pieces: list[exp.Expression] = [
        exp.Chr(expressions=[exp.Literal.number(ord(part))]) if UNSAFE_IN_STRING.fullmatch(part)
        else exp.Literal.string(part)
        for part in UNSAFE_IN_STRING.split(node.this)
        if part
    ]  # fmt: skip
    return pieces[0] if len(pieces) == 1 else exp.Concat(expressions=pieces)


def substitution_off(dialect_name: str) -> str:
    """The statement that stops the server substituting `${...}` for the rest of the session."""
    _dialect(dialect_name)
    return f"SET {SUBSTITUTION_SETTING[dialect_name]}=false"


def render_query(sql: Any, dialect_name: str = "hive") -> str:
    """The accepted query as the server gets it (one line, no comments). Raises QueryError."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryError("must be a non-empty SELECT query")
    if len(sql) > SQL_MAX:
        raise QueryError(f"must be at most {SQL_MAX} characters")
    if "${" in sql:
        raise QueryError("must not contain '${' (Hive would substitute a variable there)")
    dialect = _dialect(dialect_name)
    tree = _parse(sql, dialect)
    _check_tree(tree)
    _drop_hints(tree)
    tree = tree.transform(_plain_strings)
    try:
        text, called = _render(tree, dialect)
    except SqlglotError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise QueryError(f"uses syntax that cannot be rendered for the server ({first})") from None
    _check_functions(called)
    # The rendering is what runs: it must itself be accepted, unchanged, and leave no
    # foothold for a client-side parser (no line breaks, no substitution markers).
    if any(c in text for c in ("\\", '"', "\n", "\r", "${")):
        raise QueryError("renders to text that cannot be sent safely; simplify the query")
    again = _parse(text, dialect)
    _check_tree(again)
    text_again, called_again = _render(again, dialect)
    _check_functions(called_again)
    if text_again != text:
        raise QueryError("renders ambiguously; simplify the query")
    return text
