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

from fuxictr_workflow.domain import validation as v
from fuxictr_workflow.domain.config import WorkflowConfig

CONTEXT_CONFIG = "cfg"  # the WorkflowConfig whose allowlists and SQL dialect apply
CONTEXT_BUDGET = "sql_budget"  # a sql_budget.Budget shared by both queries (the API's)


def _config(info: ValidationInfo) -> WorkflowConfig:
    """The config the caller validates against: required, so that the API and the stages
    never check one request against two configs (the context's and a global one)."""
    cfg = (info.context or {}).get(CONTEXT_CONFIG)
    if not isinstance(cfg, WorkflowConfig):
        raise TypeError(f"validate task fields with context={{{CONTEXT_CONFIG!r}: <WorkflowConfig>}}")
    return cfg


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


def _text(max_length: int, pattern: str, title: str, description: str, **extra: Any) -> Any:
    """A required text field: its length limits (enforced), the form's pattern (JSON Schema
    only: the field's rule enforces it, saying the fix), its title and description."""
    return Field(
        min_length=1,
        max_length=max_length,
        title=title,
        description=description,
        json_schema_extra={"pattern": pattern, **extra},
    )


SQL_DESCRIPTION = "One SELECT (or WITH ... SELECT) query"
Sql = Annotated[str, _rule(_select)]


class TaskFields(BaseModel):
    """What a workflow task is made of, as the seed's TaskCreateRequest names it."""

    model_config = ConfigDict(frozen=True)

    name: Annotated[str, field_rule(v.validate_name)] = _text(
        v.NAME_MAX, v.NAME_PATTERN, "Task name", "A name for this pipeline run."
    )
    experiment_id: Annotated[str, field_rule(v.validate_experiment_id)] = _text(
        v.EXPERIMENT_ID_MAX,
        v.EXPERIMENT_ID_PATTERN,
        "Experiment id",
        "FuXiCTR expid in the server's model_config.yaml (letters, digits, _ . -).",
    )
    sample_sql: Sql = _text(
        v.SQL_MAX,
        v.NOT_BLANK_PATTERN,
        "Sample SQL",
        f"{SQL_DESCRIPTION} for the training data, with the label column.",
        format="multiline",
    )
    infer_sql: Sql = _text(
        v.SQL_MAX,
        v.NOT_BLANK_PATTERN,
        "Inference SQL",
        f"{SQL_DESCRIPTION} for the rows to score (id column(s) + features).",
        format="multiline",
    )
    hdfs_path: Annotated[str, _rule(lambda value, info: v.validate_hdfs_path(value, _config(info)))] = _text(
        v.HDFS_PATH_MAX,
        v.HDFS_PATH_PATTERN,
        "HDFS path",
        "Absolute path (or a URL config.yaml's hdfs.allowed_urls lists) for this run's files.",
    )
    hive_table: Annotated[str, _rule(lambda value, info: v.validate_hive_table(value, _config(info)))] = (
        _text(
            v.HIVE_TABLE_MAX,
            v.HIVE_TABLE_PATTERN,
            "Hive table",
            "database.table for the predictions, in one of hive.output_databases "
            "(created if missing; one partition per task).",
        )
    )


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
