"""The user-field rules that keep untrusted SQL, table names and paths away from Hive and the shell."""

from __future__ import annotations

import pytest

from fuxictr_workflow.operators.hive import hive_ident, hive_string, render
from fuxictr_workflow.validation import (
    FieldError,
    validate_hdfs_path,
    validate_hive_table,
    validate_select,
)


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
        ("SELECT 1; DROP TABLE y", "single statement"),
        ("SELECT 1;\nSELECT 2", "single statement"),
        ("DROP TABLE y", "SELECT"),
        ("INSERT INTO y SELECT 1", "SELECT"),
        ("WITH x AS (SELECT 1) INSERT OVERWRITE TABLE y SELECT * FROM x", "INSERT"),
        ("SELECT * FROM t /* unterminated", "comment"),
        ("SELECT 'open", "quote"),
        ("   ", "non-empty"),
        (None, "non-empty"),
    ],
)
def test_anything_but_one_select_is_refused_naming_the_field(sql: object, fix: str) -> None:
    with pytest.raises(FieldError, match=fix) as err:
        validate_select("infer_sql", sql)
    assert err.value.field == "infer_sql" and str(err.value).startswith("infer_sql: ")


def test_hive_table_is_db_dot_table_of_identifier_characters() -> None:
    assert validate_hive_table("Ads.Predictions_2") == "ads.predictions_2"
    for bad in ("x; DROP TABLE y", "`db`.`t`", "db.t t", "table", "db.t.x", "1db.t", "db.t--", ""):
        with pytest.raises(FieldError, match="database.table") as err:
            validate_hive_table(bad)
        assert err.value.field == "hive_table"


def test_hdfs_path_is_absolute_or_a_supported_url_without_dotdot() -> None:
    for good in ("/data/ctr", "file:///data/ctr/", "hdfs://nn:8020/data", "webhdfs://nn:9870/d"):
        assert validate_hdfs_path(good) == good.rstrip("/")
    for bad in ("data/ctr", "s3://b/k", "/data/../etc", "/d/x'; DROP", "/d/a b", "hdfs://nn/$(id)"):
        with pytest.raises(FieldError) as err:
            validate_hdfs_path(bad)
        assert err.value.field == "hdfs_path"


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
    )
    assert "CREATE TABLE IF NOT EXISTS `db`.`t` (\n  `id` BIGINT,\n  `score` DOUBLE\n)" in hql
    assert "LOAD DATA INPATH '/h/task_3/predictions' OVERWRITE INTO TABLE `db`.`t`" in hql
    assert "PARTITION (`task_id` = 3);" in hql
