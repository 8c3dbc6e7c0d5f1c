"""The one query a user may give (sample_sql / infer_sql): parsed, checked, re-rendered.

The text is parsed with sqlglot in the server's dialect (config `hive.sql_dialect`). It is
accepted only if it is exactly one query (SELECT, WITH ... SELECT, a set operation of
those) whose tree holds no statement of another kind, no TRANSFORM/MAP/REDUCE ... USING
(runs a program on the server), no function outside the dialect's allowlist (`reflect`,
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
closes where every reader thinks it does. A non-ASCII control, format or line/paragraph
separator character (NEL, U+2028, a bidi override, ...) is rendered as
DECODE(UNHEX('<its UTF-8 bytes>'), 'UTF-8'): readers that break lines there (or show text
reordered) never see one. The rendering is parsed and checked once more.

Spark reads a file where a table name's database part names a data source
(`SELECT value FROM text.conf` reads `conf` relative to the server's working directory):
such names are refused here, and the export switches `spark.sql.runSQLOnFiles` off.
The work of a check is bounded (sql_budget.py): a query over the token, nesting or time
budget is refused naming the budget.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ErrorLevel, SqlglotError

from fuxictr_workflow.domain import sql_budget
from fuxictr_workflow.domain.sql_budget import Budget, OverBudget
from fuxictr_workflow.domain.sql_functions import DENIED, allowed

SQL_MAX = 100_000
DIALECTS = ("hive", "spark")
# Every name (database, table, column, alias): letters, digits, `_`. A quoted table name
# with `/` in it is a path (Spark reads `parquet.`/any/file``), never a table.
NAME = re.compile(r"^\w+$")
# ASCII characters a string literal's rendering must not contain (see the module docstring).
UNSAFE_IN_STRING = re.compile(r"([\\'\"`\x00-\x1f\x7f])")
# Non-ASCII characters that must not appear as themselves either: C1 controls (NEL among
# them), format characters (bidi overrides, zero-width ones, BOM), line and paragraph
# separators, private-use characters. CHR(n) cannot write them (Hive and Spark take n % 256).
ENCODED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co"})
# Spark's data source short names (pyspark's DataSourceRegister services, and the external
# ones deployments add): `<name>.<path>` in FROM reads the file <path> with that source.
DATA_SOURCES = frozenset(
    {
        "avro", "binaryfile", "console", "csv", "delta", "hive", "hudi", "iceberg", "image",
        "jdbc", "json", "kafka", "libsvm", "noop", "orc", "parquet", "rate", "rate-micro-batch",
        "socket", "state-metadata", "statestore", "text", "xml",
    }
)  # fmt: skip
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


class _NameRecorder(sql_budget.TimedGenerator):
    """Generator mix-in: the name of every function call the rendering contains."""

    called: list[str]

    def func(self, name: str, *args: Any, **kwargs: Any) -> str:
        self.called.append(name)
        return super().func(name, *args, **kwargs)  # type: ignore[misc]


def _dialect(name: str) -> Dialect:
    if name not in DIALECTS:
        raise QueryError(f"unknown SQL dialect {name!r}; one of {', '.join(DIALECTS)}")
    return Dialect.get_or_raise(name)


def _render(tree: exp.Expression, dialect: Dialect, budget: Budget) -> tuple[str, list[str]]:
    base = type(dialect.generator())
    generator_class = type(f"Recording{base.__name__}", (_NameRecorder, base), {})
    generator = generator_class(
        dialect=dialect, comments=False, pretty=False, unsupported_level=ErrorLevel.RAISE
    )
    generator.called = []
    generator.budget = budget
    return generator.generate(tree), [n.lower() for n in generator.called]


def _parse(sql: str, dialect: Dialect, budget: Budget) -> exp.Expression:
    try:
        tokens = sql_budget.tokenize(sql, dialect, budget)
        trees = [t for t in sql_budget.parse(tokens, sql, dialect, budget) if t is not None]
    except SqlglotError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise QueryError(f"is not a query the parser understands ({first})") from None
    if not trees:
        raise QueryError("must be a SELECT query")
    if len(trees) > 1:
        raise QueryError(f"must be one statement; found {len(trees)} (remove everything after the first ';')")
    return trees[0]


def _check_table(node: exp.Table) -> None:
    # the qualifiers (database, catalog) whatever the table part is: Spark's SQL on files
    # looks only at them
    for key in ("db", "catalog"):
        qualifier = node.args.get(key)
        if isinstance(qualifier, exp.Identifier) and qualifier.name.lower() in DATA_SOURCES:
            raise QueryError(
                f"reads {node.sql()!r}: {qualifier.name!r} is a Spark data source, so Spark would read "
                f"the file {node.name!r} instead of a table; tables in a database of that name "
                "cannot be read"
            )
    if isinstance(node.this, exp.Identifier):
        for part in node.parts:
            if not NAME.fullmatch(part.name):
                raise QueryError(f"reads {node.sql()!r}: tables are named by database.table, never by a path")


def _check_tree(tree: exp.Expression, budget: Budget) -> None:
    root = tree.this if isinstance(tree, exp.Subquery) else tree
    if not isinstance(root, (exp.Select, exp.SetOperation)):
        kind = tree.key.upper() if not isinstance(tree, exp.Command) else str(tree.this).upper()
        raise QueryError(f"must be a SELECT (or WITH ... SELECT) query, not {kind}")
    for node in tree.walk():
        budget.tick()
        for kind, what in FORBIDDEN:
            if isinstance(node, kind):
                raise QueryError(f"must only read data; {what} is not allowed")
        if isinstance(node, exp.Anonymous) and isinstance(node.parent, exp.Dot):
            raise QueryError(
                f"calls the user function {node.parent.sql()!r}; only built-in functions are allowed"
            )
        if isinstance(node, exp.Table):
            _check_table(node)
        if isinstance(node, (exp.Identifier, exp.Var)) and not NAME.fullmatch(node.name):
            raise QueryError(f"uses the name {node.name!r}; names may only use letters, digits and '_'")


def _check_functions(called: list[str], dialect_name: str) -> None:
    names = allowed(dialect_name)
    for name in called:
        if name in DENIED:
            raise QueryError(f"calls {name}(), which {DENIED[name]}; it is not allowed")
        if name not in names:
            raise QueryError(
                f"calls {name}(), which is not an allowed built-in function of {dialect_name} "
                "(config hive.sql_dialect)"
            )


def _drop_hints(tree: exp.Expression) -> None:
    """Optimizer hints only steer join planning; they are rendered as comments, so they go."""
    for hint in list(tree.find_all(exp.Hint)):
        hint.pop()


def _unsafe_beyond_ascii(char: str) -> bool:
    return ord(char) > 0x7F and unicodedata.category(char) in ENCODED_CATEGORIES


def _must_encode(char: str) -> bool:
    return bool(UNSAFE_IN_STRING.fullmatch(char)) or _unsafe_beyond_ascii(char)


def _encoded(char: str) -> exp.Expression:
    """CHR(n) for an ASCII character; DECODE(UNHEX('<UTF-8 hex>'), 'UTF-8') beyond ASCII."""
    if ord(char) <= 0x7F:
        return exp.Chr(expressions=[exp.Literal.number(ord(char))])
    return exp.Decode(
        this=exp.Unhex(this=exp.Literal.string(char.encode().hex().upper())),
        charset=exp.Literal.string("UTF-8"),
    )


def _pieces(text: str) -> list[exp.Expression]:
    pieces: list[exp.Expression] = []
    plain: list[str] = []
    for char in text:
        if _must_encode(char):
            if plain:
                pieces.append(exp.Literal.string("".join(plain)))
                plain = []
            pieces.append(_encoded(char))
        else:
            plain.append(char)
    if plain:
        pieces.append(exp.Literal.string("".join(plain)))
    return pieces


def _plain_strings(node: exp.Expression, budget: Budget) -> exp.Expression:
    """A string literal with a character a reader may misread becomes CONCAT('..', CHR(n), ..)."""
    budget.tick()
    if isinstance(node, exp.RawString):
        node = exp.Literal.string(node.name)
    if not (isinstance(node, exp.Literal) and node.is_string and any(_must_encode(c) for c in node.this)):
        return node
    pieces = _pieces(node.this)
    budget.spend_encoded(sum(not isinstance(p, exp.Literal) for p in pieces))
    return pieces[0] if len(pieces) == 1 else exp.Concat(expressions=pieces)


def substitution_off(dialect_name: str) -> str:
    """The statement that stops the server substituting `${...}` for the rest of the session."""
    _dialect(dialect_name)
    return f"SET {SUBSTITUTION_SETTING[dialect_name]}=false"


def session_settings(dialect_name: str) -> list[str]:
    """The statements that make a session safe for user queries, run before any of them:
    substitution off, and on Spark, SQL on files off (`text.`/path`` would read a file).

    Per session, so they hold on a cluster's Spark Thrift Server whatever its defaults; users
    cannot undo them (SET is not a query)."""
    statements = [substitution_off(dialect_name)]
    if dialect_name == "spark":
        statements.append("SET spark.sql.runSQLOnFiles=false")
    return statements


def render_query(sql: Any, dialect_name: str = "hive", budget: Budget | None = None) -> str:
    """The accepted query as the server gets it (one line, no comments). Raises QueryError.

    `budget` bounds the work (sql_budget.py); without one, the token and nesting limits
    apply and there is no time limit."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryError("must be a non-empty SELECT query")
    if len(sql) > SQL_MAX:
        raise QueryError(f"must be at most {SQL_MAX} characters")
    if "${" in sql:
        raise QueryError("must not contain '${' (Hive would substitute a variable there)")
    try:
        sql.encode()
    except UnicodeEncodeError:
        raise QueryError("must be valid Unicode text (it holds an unpaired surrogate)") from None
    dialect = _dialect(dialect_name)
    budget = budget.fresh() if budget is not None else Budget()
    try:
        return _checked_rendering(sql, dialect, dialect_name, budget)
    except OverBudget as err:
        raise QueryError(str(err)) from None
    except RecursionError:
        raise QueryError(
            "nests expressions too deeply to check; flatten the query (name subqueries in a WITH clause)"
        ) from None


def _checked_rendering(sql: str, dialect: Dialect, dialect_name: str, budget: Budget) -> str:
    tree = _parse(sql, dialect, budget)
    _check_tree(tree, budget)
    _drop_hints(tree)
    tree = tree.transform(lambda node: _plain_strings(node, budget))
    try:
        text, called = _render(tree, dialect, budget)
    except SqlglotError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise QueryError(f"uses syntax that cannot be rendered for the server ({first})") from None
    _check_functions(called, dialect_name)
    # The rendering is what runs: it must itself be accepted, unchanged, and leave no
    # foothold for a client-side parser (no line breaks, no substitution markers).
    if any(c in text for c in ("\\", '"', "\n", "\r", "${")) or any(map(_unsafe_beyond_ascii, text)):
        raise QueryError("renders to text that cannot be sent safely; simplify the query")
    again = _parse(text, dialect, budget)
    _check_tree(again, budget)
    text_again, called_again = _render(again, dialect, budget)
    _check_functions(called_again, dialect_name)
    if text_again != text:
        raise QueryError("renders ambiguously; simplify the query")
    return text
