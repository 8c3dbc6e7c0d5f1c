"""The bounds on checking a user query (sql_budget.py), Spark's data-source table names, the
per-dialect function allowlists, the characters a rendering never carries as themselves, and
the other small bounds on what users and the training server send (hdfs_path globs,
prediction column names, the WebSocket's `after`)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pyarrow as pa
import pytest

from fuxictr_workflow.domain import sql_budget
from fuxictr_workflow.domain.config import parse_config
from fuxictr_workflow.domain.sql_budget import Budget
from fuxictr_workflow.domain.sql_functions import HIVE, SPARK, allowed
from fuxictr_workflow.domain.sql_query import DATA_SOURCES, render_query, session_settings
from fuxictr_workflow.domain.validation import (
    HDFS_PATH_PATTERN,
    FieldError,
    validate_hdfs_path,
    validate_select,
)
from fuxictr_workflow.store import WorkflowStore
from tests.conftest import new_task

DIALECTS = ["hive", "spark"]


def refused(sql: str, dialect: str = "spark", budget: Budget | None = None) -> str:
    with pytest.raises(FieldError) as err:
        validate_select("infer_sql", sql, dialect, budget)
    assert err.value.field == "infer_sql"
    return err.value.message


# -------- budget --------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_query_over_the_token_budget_is_refused(dialect: str) -> None:
    sql = "SELECT " + "1+" * sql_budget.TOKEN_BUDGET + "1"
    assert "more than 20,000 tokens" in refused(sql, dialect)
    small = "SELECT " + "1+" * 1000 + "1"
    assert render_query(small, dialect)  # the same shape within the budget passes


def test_the_tokenizer_stops_at_the_budget() -> None:
    """Past the budget the text is not read at all: an unterminated string at its end, which a
    full tokenization reports as a syntax error, is never reached."""
    tail = " 'never closed"
    assert "parser" in refused("SELECT 1" + tail)
    assert "tokens" in refused("SELECT " + "1+" * 30_000 + "1" + tail)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_deep_parentheses_are_refused_not_a_recursion_error(dialect: str) -> None:
    assert "nests parentheses" in refused("SELECT " + "(" * 600 + "1" + ")" * 600, dialect)
    depth = sql_budget.MAX_PAREN_DEPTH
    assert render_query("SELECT " + "(" * depth + "1" + ")" * depth, dialect)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_other_deep_nesting_is_refused_naming_the_field(dialect: str) -> None:
    """No parentheses to count: the parser's own recursion runs out, and that is a refusal."""
    assert "too deeply" in refused("SELECT " + "- " * 3000 + "1", dialect)
    assert "too deeply" in refused("SELECT " + "NOT " * 3000 + "TRUE", dialect)


def test_the_time_limit_refuses_a_query_the_token_budget_allows() -> None:
    sql = "SELECT a FROM t WHERE " + " OR ".join(f"a = {i}" for i in range(500))
    assert render_query(sql, "spark")
    assert "took more than 0 s" in refused(sql, budget=Budget(seconds=0))


def test_one_budget_serves_both_queries_of_a_request_with_their_own_counts() -> None:
    budget = Budget(seconds=60)
    sql = "SELECT " + "1+" * (sql_budget.TOKEN_BUDGET // 3) + "1"
    for _ in range(4):  # four queries of a third of the budget each: each counts alone
        assert render_query(sql, "spark", budget)


def test_strings_that_render_as_many_function_calls_are_refused() -> None:
    quotes = "SELECT '" + "\\'" * 5000 + "'"
    assert "too many quotes" in refused(quotes)
    assert render_query("SELECT '" + "\\'" * 100 + "'", "spark").count("CHR(39)") == 100


# -------- Spark data sources as database names --------


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "table",
    [
        "text.conf",
        "TEXT.conf",
        "parquet.x",
        "orc.x",
        "json.x",
        "csv.x",
        "`binaryFile`.conf",
        "binaryfile.conf",
        "avro.x",
        "xml.x",
        "jdbc.x",
        "libsvm.x",
        "spark_catalog.text.conf",
    ],
)
def test_a_database_part_naming_a_data_source_is_refused(dialect: str, table: str) -> None:
    message = refused(f"SELECT value FROM {table}", dialect)
    assert "data source" in message and "file" in message


@pytest.mark.parametrize("dialect", DIALECTS)
def test_tables_and_columns_named_like_data_sources_are_fine(dialect: str) -> None:
    assert render_query("SELECT t.text, t.json FROM db.text t JOIN db.parquet p ON t.id = p.id", dialect)


def test_the_data_source_list_holds_sparks_built_in_short_names() -> None:
    """pyspark 4.3's DataSourceRegister services (spark-sql, spark-hive, spark-mllib) and the
    usual external packages: compared lower-case, as Spark's lookup does."""
    built_in = {"csv", "jdbc", "json", "noop", "orc", "parquet", "text", "xml", "console", "rate",
                "socket", "binaryfile", "statestore", "hive", "libsvm", "image"}  # fmt: skip
    assert built_in | {"avro", "kafka", "delta", "iceberg"} <= DATA_SOURCES
    assert all(name == name.lower() for name in DATA_SOURCES)


# -------- functions --------


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("call", ["from_avro(a, '{}')", "to_avro(a)", "schema_of_avro('{}')"])
def test_avro_functions_are_denied(dialect: str, call: str) -> None:
    assert "avroSchemaUrl" in refused(f"SELECT {call} FROM t", dialect)


def test_each_dialect_has_its_own_allowlist() -> None:
    assert "floor_day" in HIVE and "floor_day" not in SPARK
    assert "try_divide" in SPARK and "try_divide" not in HIVE
    assert render_query("SELECT floor_day(d) FROM t", "hive")
    assert "not an allowed built-in function of spark" in refused("SELECT floor_day(d) FROM t", "spark")
    assert render_query("SELECT try_divide(a, 2) FROM t", "spark")
    assert "not an allowed built-in function of hive" in refused("SELECT try_divide(a, 2) FROM t", "hive")
    assert allowed("hive") - HIVE == set() and allowed("spark") - SPARK == set()


# the legitimate queries of tests/security/test_sql_and_paths.py, in both dialects
LEGIT = [
    "WITH per_user AS (SELECT user_id, sum(amount) AS total FROM db.events GROUP BY user_id) "
    "SELECT * FROM per_user WHERE total > 4.5",
    "SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY amount DESC) AS rn FROM db.events",
    "SELECT id, tag FROM db.events LATERAL VIEW explode(tags) t AS tag",
    "SELECT id, pos FROM db.events LATERAL VIEW OUTER posexplode(tags) p AS pos, tag",
    "SELECT id, concat_ws(',', tags) AS joined, nvl(s, '') AS s2, date_add('2024-01-01', 1) AS d, "
    "if(amount > 2, 'hi', 'lo') AS band, get_json_object('{\"a\": 1}', '$.a') AS j, "
    "regexp_extract(s, '([a-z]+)', 1) AS word FROM db.events",
    "SELECT count(*), max(amount), collect_set(user_id), percentile_approx(amount, 0.5) FROM db.events",
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("sql", LEGIT, ids=range(len(LEGIT)))
def test_everyday_queries_pass_in_both_dialects(dialect: str, sql: str) -> None:
    assert render_query(sql, dialect)


# -------- characters --------

ENCODED = ["\u2028", "\u2029", "\x85", "\x9b", "\u202e", "\u200b", "\ufeff", "\ue000"]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("char", ENCODED, ids=[f"U+{ord(c):04X}" for c in ENCODED])
def test_non_ascii_controls_and_separators_are_encoded(dialect: str, char: str) -> None:
    text = render_query(f"SELECT 'a{char}b' AS v, 'é✓' AS w", dialect)
    assert char not in text and len(text.splitlines()) == 1
    hex_utf8 = char.encode().hex().upper()
    assert f"CONCAT('a', DECODE(UNHEX('{hex_utf8}'), 'UTF-8'), 'b')" in text
    assert "'é✓'" in text  # ordinary non-ASCII text stays as it is


def test_every_character_of_the_encoded_categories_is_encoded() -> None:
    for code in range(0x80, 0x3000):
        char = chr(code)
        if unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp", "Co"}:
            assert char not in render_query(f"SELECT 'x{char}'", "spark"), f"U+{code:04X}"


def test_a_lone_surrogate_is_refused() -> None:
    assert "unpaired surrogate" in refused("SELECT 'a\ud800b'")


# -------- session settings --------


def test_spark_sessions_turn_sql_on_files_off() -> None:
    assert session_settings("spark") == [
        "SET spark.sql.variable.substitute=false",
        "SET spark.sql.runSQLOnFiles=false",
    ]
    assert session_settings("hive") == ["SET hive.variable.substitute=false"]


# -------- hdfs_path, prediction columns, WebSocket `after` --------


@pytest.mark.parametrize("path", ["/data/*", "/data/x?", "/data/[ab]", "/data/{a,b}", "/data/a]", "/d/x}"])
def test_hdfs_path_refuses_glob_characters(path: str) -> None:
    cfg = parse_config({"servers": {"s": {"host": "127.0.0.1", "username": "u"}}}, Path("/"))
    with pytest.raises(FieldError, match="glob") as err:
        validate_hdfs_path(path, cfg)
    assert err.value.field == "hdfs_path"
    assert not re.match(HDFS_PATH_PATTERN, path)  # the trigger form refuses it too
    assert validate_hdfs_path("/data/ab", cfg) == "/data/ab"


@pytest.mark.parametrize(
    "names",
    [
        ["id", "score_x; DROP TABLE t"],
        ["id", "score_a\nb"],
        ["id", "score_x\n"],  # `$` alone would let a trailing newline through
        ["id", "score_`x`"],
        ["id", "score_" + "x" * 200],
        ["id\u2028", "score"],
    ],
)
def test_prediction_column_names_from_the_server_are_checked(names: list[str]) -> None:
    from fuxictr_workflow.orchestration.operators.hive import predictions_columns
    from fuxictr_workflow.tracking import StageError

    schema = pa.schema([(n, pa.float64()) for n in names])
    with pytest.raises(StageError, match="cannot be Hive columns") as err:
        predictions_columns(schema, "file:///p", [names[0]])
    assert not err.value.retryable


def test_prediction_column_names_that_fit_pass() -> None:
    from fuxictr_workflow.orchestration.operators.hive import predictions_columns

    schema = pa.schema([("user_id", pa.int64()), ("score_click", pa.float64()), ("score_buy", pa.float64())])
    assert predictions_columns(schema, "file:///p", ["user_id"]) == [
        ("user_id", "BIGINT"),
        ("score_click", "DOUBLE"),
        ("score_buy", "DOUBLE"),
    ]


def test_websocket_after_is_bounded() -> None:
    from fuxictr_workflow.api.logs_ws import AFTER_MAX, parse_after

    assert parse_after("0") == 0 and parse_after(str(AFTER_MAX)) == AFTER_MAX
    for bad in (str(AFTER_MAX + 1), "9" * 40, "-1", "1e3", "", " 1", "١٢"):
        assert parse_after(bad) is None, bad


def test_websocket_after_skips_a_batch_at_a_time(store: WorkflowStore) -> None:
    """The skip reads the store in batches (never `after` rows at once) and lands where a
    single read would: the id of the after-th event, or the last one when there are fewer."""
    import asyncio

    from fuxictr_workflow.api import logs_ws

    task_id = new_task(store)
    ids = [store.append_log(task_id, "train", "INFO", f"line {i}") for i in range(2 * logs_ws.BATCH + 500)]
    for after in (0, 1, logs_ws.BATCH, logs_ws.BATCH + 1, 2 * logs_ws.BATCH + 123):
        assert asyncio.run(logs_ws._skip(store, task_id, after)) == (ids[after - 1] if after else 0, after)
    assert asyncio.run(logs_ws._skip(store, task_id, logs_ws.AFTER_MAX)) == (ids[-1], len(ids))
