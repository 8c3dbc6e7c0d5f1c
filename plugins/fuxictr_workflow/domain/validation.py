"""The rules for everything a user sends: each of the six task fields and the optional server.

task_fields.py's model applies them for the API (422), the DAG's Params (the patterns below are
its JSON Schema's) and the stages (a failed step). Every error names the field and the fix.
Nothing that passes here is ever used in a shell or as a SQL identifier without quoting on
top, and a query reaches Hive only as sql_query.py's rendering of its checked tree. Path and
table rules take the allowlists from config.yaml (hdfs.allowed_urls,
hdfs.allowed_path_prefixes, hive.warehouse_dir, hive.output_databases).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit

from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.domain.sql_budget import Budget
from fuxictr_workflow.domain.sql_query import SQL_MAX as SQL_MAX  # the model's limit
from fuxictr_workflow.domain.sql_query import QueryError, render_query

# Field limits, shared with the store's column sizes and task_fields.py's model.
NAME_MAX = 255
EXPERIMENT_ID_MAX = 100
HDFS_PATH_MAX = 500
HIVE_TABLE_MAX = 255

# JSON-schema patterns for the Params too (Python `re` and the browser's RegExp read them alike).
# The rules apply them with re.fullmatch: Python's `$` also matches before a final newline.
NAME_PATTERN = r"^(?=.*\S)[^\x00-\x1f]*$"  # something besides spaces, no control characters
NOT_BLANK_PATTERN = r"\S"
EXPERIMENT_ID_PATTERN = r"^(?!\.\.?$)[A-Za-z0-9_.-]+$"  # not "." or ".."
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
HIVE_TABLE_PATTERN = rf"^{IDENTIFIER}\.{IDENTIFIER}$"
HDFS_SCHEMES = ("file", "hdfs", "webhdfs")
# The shape only (the trigger form's JSON schema uses it too); validate_hdfs_path adds the
# config's allowlists, the warehouse and '..'. No glob characters (* ? [ ] { }): fsspec's
# listing, copy and delete calls and Hive's LOAD DATA INPATH expand them, so one path could
# name (and the export overwrite) directories of other tasks or users.
HDFS_PATH_PATTERN = r"^(/|(file|hdfs|webhdfs)://)[^\s;'\"`$\\%*?\[\]{}]*$"
GLOB_CHARACTERS = "*?[]{}"


class FieldError(ValueError):
    """A user-supplied field is invalid. `field` names it; the message says the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def validate_select(field: str, sql: Any, dialect: str = "hive", budget: Budget | None = None) -> str:
    """One read-only query (sql_query.py decides). Returns the user's text, stripped of a final `;`.

    The text is kept as written (the task shows it); what runs is render_select's output.
    `budget` bounds the check (sql_budget.py; the API passes one with a time limit)."""
    render_select(field, sql, dialect, budget)
    return sql.strip().rstrip(";").rstrip()


def render_select(field: str, sql: Any, dialect: str = "hive", budget: Budget | None = None) -> str:
    """The query as the server gets it: sqlglot's rendering of the checked tree."""
    try:
        return render_query(sql, dialect, budget)
    except QueryError as err:
        raise FieldError(field, str(err)) from None


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
    if not re.fullmatch(EXPERIMENT_ID_PATTERN, value):
        raise FieldError("experiment_id", "may only contain letters, digits, '_', '.' and '-'")
    return value


def validate_hive_table(value: Any, cfg: WorkflowConfig) -> str:
    if not isinstance(value, str) or not value:
        raise FieldError("hive_table", "must be a non-empty 'database.table' name")
    if len(value) > HIVE_TABLE_MAX:
        raise FieldError("hive_table", f"must be at most {HIVE_TABLE_MAX} characters")
    if not re.fullmatch(HIVE_TABLE_PATTERN, value):
        raise FieldError(
            "hive_table",
            "must be 'database.table', each part letters, digits and '_' (not starting with a digit)",
        )
    database = value.split(".")[0].lower()
    allowed = cfg.hive.output_databases
    if database not in allowed:
        raise FieldError(
            "hive_table",
            f"database {database!r} is not an output database; use one of {', '.join(allowed)} "
            "(config hive.output_databases)",
        )
    return value.lower()


def _inside(path: str, directory: str) -> bool:
    return directory == "/" or path == directory or path.startswith(directory + "/")


def _has_dotdot(value: str) -> bool:
    """'..' as a path segment, as written or after any number of percent-decodings."""
    seen = value
    while True:  # each decoding that changes the text shortens it
        if ".." in re.split(r"[/\\]", seen):
            return True
        decoded = unquote(seen)
        if decoded == seen:
            return False
        seen = decoded


def validate_hdfs_path(value: Any, cfg: WorkflowConfig) -> str:
    """An absolute path, or a URL whose scheme://host[:port] config allows; never in the warehouse."""
    field = "hdfs_path"
    if not isinstance(value, str) or not value:
        raise FieldError(field, "must be a non-empty absolute path or hdfs://, webhdfs://, file:// URL")
    if len(value) > HDFS_PATH_MAX:
        raise FieldError(field, f"must be at most {HDFS_PATH_MAX} characters")
    if _has_dotdot(value):
        raise FieldError(field, "must not contain '..' (in any encoding)")
    if "%" in value:
        raise FieldError(field, "must not contain percent-encoded characters")
    if any(c in GLOB_CHARACTERS for c in value):
        raise FieldError(field, f"must not contain glob characters ({' '.join(GLOB_CHARACTERS)})")
    if "://" in value and value.split("://", 1)[0] not in HDFS_SCHEMES:
        raise FieldError(field, f"URL scheme must be one of {', '.join(HDFS_SCHEMES)}")
    if not re.fullmatch(HDFS_PATH_PATTERN, value):
        raise FieldError(
            field,
            "must be an absolute path (/...) or an hdfs://, webhdfs://, file:// URL, without spaces or quotes",
        )
    path = value
    if "://" in value:
        url = urlsplit(value)
        origin = f"{url.scheme}://{url.netloc}".lower()
        if url.username is not None or url.password is not None or url.query or url.fragment:
            raise FieldError(field, "must not carry a user, a query or a fragment")
        if origin not in cfg.hdfs.allowed_urls:
            allowed = ", ".join(cfg.hdfs.allowed_urls) or "none: plain /paths only"
            raise FieldError(
                field, f"{origin} is not an allowed filesystem (config hdfs.allowed_urls: {allowed})"
            )
        path = url.path or "/"
    if not path.startswith("/"):
        raise FieldError(field, "must be an absolute path (/...)")
    if "//" in path or "." in path.split("/"):
        raise FieldError(field, "must not contain empty or '.' path segments")
    path = path.rstrip("/") or "/"
    warehouse = cfg.hive.warehouse_dir
    if _inside(path, warehouse):
        raise FieldError(
            field, f"must not be inside the Hive warehouse {warehouse} (the export overwrites directories)"
        )
    prefixes = cfg.hdfs.allowed_path_prefixes
    if prefixes and not any(_inside(path, p) for p in prefixes):
        raise FieldError(
            field, f"must be under one of {', '.join(prefixes)} (config hdfs.allowed_path_prefixes)"
        )
    return value.rstrip("/") or "/"


def validate_server(value: Any, servers: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in servers:
        raise FieldError("server", f"unknown training server {value!r}; configured: {', '.join(servers)}")
    return value
