"""The six task fields, defined once: a pydantic model with each field's limits, form pattern,
title, description and rule.

Everything that takes the fields from a user reads this model:
- the API's request body (api/schemas.py's TaskCreateRequest extends it: 422 naming the field),
- the DAG's Params (dag_params.py: its JSON Schema is the trigger form's and Airflow's REST
  API's check at trigger time),
- every stage's re-check of a run's fields before it touches Hive, a shell or the server
  (validate_task_fields: a failed step naming the field).

Lengths are pydantic constraints, checked before any rule runs (they bound the rules' cost). A
pattern is only the form's shape check: the JSON Schema carries it, and the field's rule
(validation.py) enforces it with a message that says the fix, together with what a schema
cannot say (one parsed SELECT, the config's database and path allowlists). Those rules need
the config and, from the API, a SQL budget: both come in the validation context
(CONTEXT_CONFIG, CONTEXT_BUDGET).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo

from fuxictr_workflow import validation as v
from fuxictr_workflow.config import WorkflowConfig, get_config

CONTEXT_CONFIG = "cfg"  # the WorkflowConfig whose allowlists and SQL dialect apply
CONTEXT_BUDGET = "sql_budget"  # a sql_budget.Budget shared by both queries (the API's)


def _config(info: ValidationInfo) -> WorkflowConfig:
    return (info.context or {}).get(CONTEXT_CONFIG) or get_config()


def _rule(check: Callable[[str, ValidationInfo], str]) -> AfterValidator:
    """A validation.py rule as a field's validator; its FieldError becomes pydantic's error
    (the message is the rule's, so every caller says the same fix)."""

    def run(value: str, info: ValidationInfo) -> str:
        try:
            return check(value, info)
        except v.FieldError as err:
            raise ValueError(err.message) from None

    return AfterValidator(run)


def field_rule(check: Callable[[str], str]) -> AfterValidator:
    """A rule that needs no config, as a validator (also for the API's path parameters)."""
    return _rule(lambda value, _: check(value))


def _select(value: str, info: ValidationInfo) -> str:
    budget = (info.context or {}).get(CONTEXT_BUDGET)
    if budget is not None:
        budget.checking = info.field_name
    return v.validate_select(str(info.field_name), value, _config(info).hive.sql_dialect, budget)


def _form(pattern: str, **extra: Any) -> dict[str, Any]:
    return {"pattern": pattern, **extra}


SQL_DESCRIPTION = "One SELECT (or WITH ... SELECT) query"
Sql = Annotated[str, Field(min_length=1, max_length=v.SQL_MAX), _rule(_select)]


class TaskFields(BaseModel):
    """What a workflow task is made of, as the seed's TaskCreateRequest names it."""

    model_config = ConfigDict(frozen=True)

    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=v.NAME_MAX,
            title="Task name",
            description="A name for this pipeline run.",
            json_schema_extra=_form(v.NAME_PATTERN),
        ),
        field_rule(v.validate_name),
    ]
    experiment_id: Annotated[
        str,
        Field(
            min_length=1,
            max_length=v.EXPERIMENT_ID_MAX,
            title="Experiment id",
            description="FuXiCTR expid in the server's model_config.yaml (letters, digits, _ . -).",
            json_schema_extra=_form(v.EXPERIMENT_ID_PATTERN),
        ),
        field_rule(v.validate_experiment_id),
    ]
    sample_sql: Annotated[
        Sql,
        Field(
            title="Sample SQL",
            description=f"{SQL_DESCRIPTION} for the training data, with the label column.",
            json_schema_extra=_form(v.NOT_BLANK_PATTERN, format="multiline"),
        ),
    ]
    infer_sql: Annotated[
        Sql,
        Field(
            title="Inference SQL",
            description=f"{SQL_DESCRIPTION} for the rows to score (id column(s) + features).",
            json_schema_extra=_form(v.NOT_BLANK_PATTERN, format="multiline"),
        ),
    ]
    hdfs_path: Annotated[
        str,
        Field(
            min_length=1,
            max_length=v.HDFS_PATH_MAX,
            title="HDFS path",
            description="Absolute path (or a URL config.yaml's hdfs.allowed_urls lists) for this run's files.",
            json_schema_extra=_form(v.HDFS_PATH_PATTERN),
        ),
        _rule(lambda value, info: v.validate_hdfs_path(value, _config(info))),
    ]
    hive_table: Annotated[
        str,
        Field(
            min_length=1,
            max_length=v.HIVE_TABLE_MAX,
            title="Hive table",
            description="database.table for the predictions, in one of hive.output_databases "
            "(created if missing; one partition per task).",
            json_schema_extra=_form(v.HIVE_TABLE_PATTERN),
        ),
        _rule(lambda value, info: v.validate_hive_table(value, _config(info))),
    ]


TASK_FIELDS: tuple[str, ...] = tuple(TaskFields.model_fields)


def field_schemas() -> dict[str, dict[str, Any]]:
    """Each field's JSON Schema (type, limits, pattern, title, description), by name."""
    properties: dict[str, dict[str, Any]] = TaskFields.model_json_schema()["properties"]
    return {name: dict(properties[name]) for name in TASK_FIELDS}


def validate_task_fields(data: dict[str, Any], cfg: WorkflowConfig) -> TaskFields:
    """The six fields of `data` as the model cleans them; raises FieldError for the first
    missing or invalid one, in field order."""
    for field in TASK_FIELDS:
        if data.get(field) is None:
            raise v.FieldError(field, "is required")
    try:
        return TaskFields.model_validate({f: data[f] for f in TASK_FIELDS}, context={CONTEXT_CONFIG: cfg})
    except ValidationError as err:
        first = min(err.errors(include_url=False), key=lambda e: TASK_FIELDS.index(str(e["loc"][0])))
        raise v.FieldError(str(first["loc"][0]), first["msg"].removeprefix("Value error, ")) from None
