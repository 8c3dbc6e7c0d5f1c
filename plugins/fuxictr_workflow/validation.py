"""Validation of everything a user sends: the six task fields and the optional server.

One rule set for the API (422), the DAG's Params (JSON schema in the trigger form) and the
stages (a failed step). Every error names the field and the fix. Nothing that passes here
is ever used in a shell or as a SQL identifier without quoting on top.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Field limits, shared with the store's column sizes and the DAG's Params schema.
NAME_MAX = 255
EXPERIMENT_ID_MAX = 100
HDFS_PATH_MAX = 500
HIVE_TABLE_MAX = 255
SQL_MAX = 100_000

# JSON-schema patterns for the Params too (Python `re` and the browser's RegExp read them alike)
NAME_PATTERN = r"^(?=.*\S)[^\x00-\x1f]*$"  # something besides spaces, no control characters
NOT_BLANK_PATTERN = r"\S"
EXPERIMENT_ID_PATTERN = r"^(?!\.\.?$)[A-Za-z0-9_.-]+$"  # not "." or ".."
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
HIVE_TABLE_PATTERN = rf"^{IDENTIFIER}\.{IDENTIFIER}$"
HDFS_SCHEMES = ("file", "hdfs", "webhdfs")
HDFS_PATH_PATTERN = r"^(/|(file|hdfs|webhdfs)://)[^\s;'\"`$\\]*$"

TASK_FIELDS = ("name", "experiment_id", "sample_sql", "infer_sql", "hdfs_path", "hive_table")

_DDL_DML = re.compile(
    r"\b(insert|update|delete|merge|drop|create|alter|truncate|load|grant|revoke|set|use|"
    r"add|dfs|msck|export|import|analyze|reload|compute|cache|uncache|refresh)\b",
    re.IGNORECASE,
)


class FieldError(ValueError):
    """A user-supplied field is invalid. `field` names it; the message says the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _strip_sql_literals(sql: str) -> str:
    """Blank out string literals, quoted identifiers and comments so keyword checks see only code."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            j = i + 1
            while j < n and sql[j] != ch:
                j += 2 if sql[j] == "\\" else 1
            if j >= n:
                raise FieldError("", f"unterminated {ch} quote")
            out.append(" ")
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                raise FieldError("", "unterminated /* comment")
            i = j + 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def validate_select(field: str, sql: Any) -> str:
    """One SELECT/WITH query: no second statement, no DDL/DML. Returns it without a trailing `;`."""
    if not isinstance(sql, str) or not sql.strip():
        raise FieldError(field, "must be a non-empty SELECT query")
    if len(sql) > SQL_MAX:
        raise FieldError(field, f"must be at most {SQL_MAX} characters")
    text = sql.strip()
    try:
        code = _strip_sql_literals(text)
    except FieldError as err:
        raise FieldError(field, err.message) from None
    code = code.strip().rstrip(";").strip()
    if ";" in code:
        raise FieldError(field, "must be a single statement; remove the ';' and anything after it")
    if not re.match(r"^\(*\s*(select|with)\b", code, re.IGNORECASE):
        raise FieldError(field, "must be a SELECT (or WITH ... SELECT) query")
    bad = _DDL_DML.search(code)
    if bad:
        raise FieldError(field, f"must only read data; {bad.group(1).upper()!r} is not allowed in a query")
    return text.rstrip().rstrip(";").rstrip()


def validate_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FieldError("name", "must be a non-empty string")
    if len(value) > NAME_MAX:
        raise FieldError("name", f"must be at most {NAME_MAX} characters")
    if any(ord(c) < 32 for c in value):
        raise FieldError("name", "must not contain control characters")
    return value.strip()


def validate_experiment_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise FieldError("experiment_id", "must be a non-empty string")
    if len(value) > EXPERIMENT_ID_MAX:
        raise FieldError("experiment_id", f"must be at most {EXPERIMENT_ID_MAX} characters")
    if not re.match(EXPERIMENT_ID_PATTERN, value):
        raise FieldError("experiment_id", "may only contain letters, digits, '_', '.' and '-'")
    return value


def validate_hive_table(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise FieldError("hive_table", "must be a non-empty 'database.table' name")
    if len(value) > HIVE_TABLE_MAX:
        raise FieldError("hive_table", f"must be at most {HIVE_TABLE_MAX} characters")
    if not re.match(HIVE_TABLE_PATTERN, value):
        raise FieldError(
            "hive_table",
            "must be 'database.table', each part letters, digits and '_' (not starting with a digit)",
        )
    return value.lower()


def validate_hdfs_path(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise FieldError("hdfs_path", "must be a non-empty absolute path or hdfs://, webhdfs://, file:// URL")
    if len(value) > HDFS_PATH_MAX:
        raise FieldError("hdfs_path", f"must be at most {HDFS_PATH_MAX} characters")
    if "://" in value and value.split("://", 1)[0] not in HDFS_SCHEMES:
        raise FieldError("hdfs_path", f"URL scheme must be one of {', '.join(HDFS_SCHEMES)}")
    if not re.match(HDFS_PATH_PATTERN, value):
        raise FieldError(
            "hdfs_path",
            "must be an absolute path (/...) or an hdfs://, webhdfs://, file:// URL, without spaces or quotes",
        )
    if ".." in value.split("/"):
        raise FieldError("hdfs_path", "must not contain '..'")
    return value.rstrip("/") or "/"


@dataclass(frozen=True)
class TaskFields:
    name: str
    experiment_id: str
    sample_sql: str
    infer_sql: str
    hdfs_path: str
    hive_table: str

    def as_dict(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in TASK_FIELDS}


def validate_task_fields(data: dict[str, Any]) -> TaskFields:
    """Validate the six fields; raises FieldError for the first invalid one (in field order)."""
    for field in TASK_FIELDS:
        if data.get(field) is None:
            raise FieldError(field, "is required")
    return TaskFields(
        name=validate_name(data["name"]),
        experiment_id=validate_experiment_id(data["experiment_id"]),
        sample_sql=validate_select("sample_sql", data["sample_sql"]),
        infer_sql=validate_select("infer_sql", data["infer_sql"]),
        hdfs_path=validate_hdfs_path(data["hdfs_path"]),
        hive_table=validate_hive_table(data["hive_table"]),
    )


def validate_server(value: Any, servers: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in servers:
        raise FieldError("server", f"unknown training server {value!r}; configured: {', '.join(servers)}")
    return value
