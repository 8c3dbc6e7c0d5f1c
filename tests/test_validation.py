"""The user-field rules that keep untrusted SQL, table names and paths away from Hive and the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fuxictr_workflow.domain.config import WorkflowConfig, parse_config
from fuxictr_workflow.domain.validation import (
    FieldError,
    render_select,
    validate_experiment_id,
    validate_hdfs_path,
    validate_hive_table,
    validate_select,
)
from fuxictr_workflow.orchestration.operators.hive import hive_ident, hive_string, render


def config(**sections: Any) -> WorkflowConfig:
    raw = {"servers": {"s": {"host": "127.0.0.1", "username": "u"}}, **sections}
    return parse_config(raw, Path("/"))


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM db.t WHERE id < 10", "SELECT * FROM db.t WHERE id < 10"),
        ("select a from t;", "select a from t"),
        ("WITH x AS (SELECT 1 AS a) SELECT a FROM x", "WITH x AS (SELECT 1 AS a) SELECT a FROM x"),
        ("(SELECT 1) UNION ALL (SELECT 2)", "(SELECT 1) UNION ALL (SELECT 2)"),
        ("SELECT 'a;b', `drop` FROM t -- ; DROP TABLE t", "SELECT 'a;b', `drop` FROM t -- ; DROP TABLE t"),
    ],
)
def test_one_select_is_accepted(sql: str, expected: str) -> None:
    assert validate_select("sample_sql", sql) == expected


@pytest.mark.parametrize(
    ("sql", "fix"),
    [
        ("SELECT 1; DROP TABLE y", "one statement"),
        ("SELECT 1;\nSELECT 2", "one statement"),
        ("DROP TABLE y", "SELECT"),
        ("INSERT INTO y SELECT 1", "SELECT"),
        ("WITH x AS (SELECT 1) INSERT OVERWRITE TABLE y SELECT * FROM x", "INSERT"),
        ("SELECT * FROM t /* unterminated", "parser"),
        ("SELECT 'open", "parser"),
        ("   ", "non-empty"),
        (None, "non-empty"),
    ],
)
def test_anything_but_one_select_is_refused_naming_the_field(sql: object, fix: str) -> None:
    with pytest.raises(FieldError, match=fix) as err:
        validate_select("infer_sql", sql)
    assert err.value.field == "infer_sql" and str(err.value).startswith("infer_sql: ")


def test_hive_table_is_db_dot_table_of_identifier_characters() -> None:
    cfg = config(hive={"output_databases": ["ads", "db"]})
    assert validate_hive_table("Ads.Predictions_2", cfg) == "ads.predictions_2"
    for bad in ("x; DROP TABLE y", "`db`.`t`", "db.t t", "table", "db.t.x", "1db.t", "db.t--", ""):
        with pytest.raises(FieldError, match="database.table") as err:
            validate_hive_table(bad, cfg)
        assert err.value.field == "hive_table"


def test_hive_table_database_comes_from_the_config_allowlist() -> None:
    assert config().hive.output_databases == ["hive_db"]  # the seed's example database
    assert validate_hive_table("hive_db.output_table", config()) == "hive_db.output_table"
    with pytest.raises(FieldError, match="hive.output_databases") as err:
        validate_hive_table("default.output_table", config())
    assert err.value.field == "hive_table"
    assert validate_hive_table("ads.t", config(hive={"output_databases": ["Ads"]})) == "ads.t"


def test_hdfs_path_is_absolute_or_an_allowed_url_without_dotdot() -> None:
    cfg = config(hdfs={"allowed_urls": ["file://", "hdfs://nn:8020", "webhdfs://nn:9870"]})
    for good in ("/data/ctr", "file:///data/ctr/", "hdfs://nn:8020/data", "webhdfs://NN:9870/d"):
        assert validate_hdfs_path(good, cfg) == good.rstrip("/")
    for bad in (
        "data/ctr", "s3://b/k", "/data/../etc", "/d/x'; DROP", "/d/a b", "hdfs://nn:8020/$(id)",
        "/d/%2e%2e/etc", "/d/%252e%252e/etc", "/d/.%2E/etc", "/d//x", "/d/./x", "hdfs://nn/data",
        "hdfs://nn:8021/data", "hdfs://u@nn:8020/data", "webhdfs://nn:9870/d?op=OPEN", "/d/%41",
        "/user/hive/warehouse", "/user/hive/warehouse/db.db/t",
    ):  # fmt: skip
        with pytest.raises(FieldError) as err:
            validate_hdfs_path(bad, cfg)
        assert err.value.field == "hdfs_path", bad


def test_a_trailing_newline_is_refused() -> None:
    """The fields' patterns end in `$`, which also matches before a final newline: the rules
    match the whole value, so a value cannot smuggle a line break into a .hql file."""
    cfg = config()
    for rule, value in (
        (lambda v: validate_experiment_id(v), "exp_001\n"),
        (lambda v: validate_hive_table(v, cfg), "hive_db.out\n"),
        (lambda v: validate_hdfs_path(v, cfg), "/data/ctr\n"),
    ):
        with pytest.raises(FieldError):
            rule(value)


def test_hdfs_path_default_allows_plain_paths_only() -> None:
    assert validate_hdfs_path("/data/ctr", config()) == "/data/ctr"
    for url in ("file:///data/ctr", "hdfs://nn:8020/data", "webhdfs://127.0.0.2:9870/d"):
        with pytest.raises(FieldError, match="hdfs.allowed_urls"):
            validate_hdfs_path(url, config())


def test_hdfs_path_prefixes_and_warehouse_come_from_config() -> None:
    cfg = config(hdfs={"allowed_path_prefixes": ["/data/fuxictr"]}, hive={"warehouse_dir": "hdfs://nn/wh"})
    assert validate_hdfs_path("/data/fuxictr/run1", cfg) == "/data/fuxictr/run1"
    for bad in ("/data/fuxictr_other", "/data", "/tmp/x"):
        with pytest.raises(FieldError, match="allowed_path_prefixes"):
            validate_hdfs_path(bad, cfg)
    with pytest.raises(FieldError, match="warehouse"):
        validate_hdfs_path("/wh/db.db", config(hive={"warehouse_dir": "hdfs://nn/wh"}))
    assert validate_hdfs_path("/whx", config(hive={"warehouse_dir": "/wh"})) == "/whx"


@pytest.mark.parametrize("dialect", ["hive", "spark"])
def test_what_reaches_hive_is_one_plain_line_rendered_from_the_tree(dialect: str) -> None:
    """No comment, no line break, no backslash or quote inside a literal: beeline reads it as the server does."""
    sql = "SELECT a, 'x;y' AS s -- note\nFROM t /* block */ WHERE b LIKE '%\\_%' AND c <> 'it\\'s'"
    text = render_select("sample_sql", sql, dialect)
    assert text == (
        "SELECT a, 'x;y' AS s FROM t WHERE b LIKE CONCAT('%', CHR(92), '_%') AND c <> CONCAT('it', CHR(39), 's')"
    )
    assert render_select(
        "sample_sql", "SELECT /*+ MAPJOIN(u) */ t.a FROM t JOIN u ON t.k = u.k", dialect
    ) == ("SELECT t.a FROM t JOIN u ON t.k = u.k")


def test_templates_quote_on_top_of_validation() -> None:
    """Second guard: a value that slipped past validation still cannot leave its quotes."""
    assert hive_string("/a'b\\c") == "/a\\'b\\\\c"
    assert hive_ident("t`x") == "`t``x`"
    hql = render(
        "load_predictions.hql",
        database="db",
        table="t",
        columns=[("id", "BIGINT"), ("score", "DOUBLE")],
        partition_column="task_id",
        directory="/h/task_3/predictions",
        task_id=3,
        owner_property="fuxictr_workflow.created_by",
        owner_value="fuxictr-workflow",
    )
    assert "CREATE TABLE IF NOT EXISTS `db`.`t` (\n  `id` BIGINT,\n  `score` DOUBLE\n)" in hql
    assert "LOAD DATA INPATH '/h/task_3/predictions' OVERWRITE INTO TABLE `db`.`t`" in hql
    assert "PARTITION (`task_id` = 3);" in hql
    assert "TBLPROPERTIES ('fuxictr_workflow.created_by' = 'fuxictr-workflow');" in hql
