"""The six task fields are defined once (task_fields.py): the API's request model, the DAG's
Params (the trigger form's JSON Schema, checked by Airflow's own Param) and every stage's
re-check take them from that model, so they accept and refuse alike."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk import Param
from airflow.sdk.exceptions import ParamValidationError
from pydantic import ValidationError

from fuxictr_workflow.api.schemas import TaskCreateRequest
from fuxictr_workflow.domain.config import DEFAULT_CONFIG_PATH, WorkflowConfig, load_config
from fuxictr_workflow.domain.task_fields import (
    CONTEXT_CONFIG,
    TASK_FIELDS,
    field_schemas,
    validate_task_fields,
)
from fuxictr_workflow.domain.validation import FieldError
from fuxictr_workflow.orchestration.dag_params import param_schemas
from tests.seed_example import SEED_README_BODY


@pytest.fixture(scope="module")
def cfg() -> WorkflowConfig:
    return load_config(DEFAULT_CONFIG_PATH)


def form_refuses(field: str, value: Any) -> bool:
    """Airflow's check of the trigger form's value against the DAG's Param."""
    try:
        Param(**param_schemas("local")[field]).resolve(value)
    except ParamValidationError:
        return True
    return False


def api_refuses(field: str, value: Any, cfg: WorkflowConfig) -> bool:
    try:
        TaskCreateRequest.model_validate({**SEED_README_BODY, field: value}, context={CONTEXT_CONFIG: cfg})
    except ValidationError as err:
        assert [e["loc"] for e in err.errors()] == [(field,)], err
        return True
    return False


def stage_refuses(field: str, value: Any, cfg: WorkflowConfig) -> bool:
    try:
        validate_task_fields({**SEED_README_BODY, field: value}, cfg)
    except FieldError as err:
        assert err.field == field, err
        return True
    return False


# What the form's schema already refuses (length, shape): all three refuse it.
SHAPES = [
    ("name", "x" * 256),
    ("name", "tab\there"),
    ("experiment_id", ".."),
    ("experiment_id", "exp; rm -rf /"),
    ("experiment_id", "x" * 101),
    ("sample_sql", ""),
    ("infer_sql", "   "),
    ("hdfs_path", "relative/path"),
    ("hdfs_path", "/data/part-*"),
    ("hive_table", "no_db"),
    ("hive_table", "db.t; DROP TABLE y"),
]
# What only a field's rule can decide (one parsed SELECT, the config's allowlists): the form
# lets it through, the API and the stage refuse it.
RULES = [
    ("sample_sql", "SELECT 1; DROP TABLE x"),
    ("infer_sql", "INSERT INTO t SELECT 1"),
    ("hdfs_path", "/data/../etc"),
    ("hive_table", "default.output_table"),
]


@pytest.mark.parametrize(("field", "value"), SHAPES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(SHAPES)])
def test_a_bad_shape_is_refused_by_the_form_the_api_and_the_stage(
    field: str, value: str, cfg: WorkflowConfig
) -> None:
    assert form_refuses(field, value)
    assert api_refuses(field, value, cfg)
    assert stage_refuses(field, value, cfg)


@pytest.mark.parametrize(("field", "value"), RULES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(RULES)])
def test_what_only_a_rule_decides_is_refused_by_the_api_and_the_stage(
    field: str, value: str, cfg: WorkflowConfig
) -> None:
    assert not form_refuses(field, value)
    assert api_refuses(field, value, cfg)
    assert stage_refuses(field, value, cfg)


def test_the_seed_body_passes_all_three_cleaned_alike(cfg: WorkflowConfig) -> None:
    body = {
        **SEED_README_BODY,
        "sample_sql": SEED_README_BODY["sample_sql"] + ";",
        "hive_table": "HIVE_DB.Out",
    }
    assert not any(form_refuses(f, body[f]) for f in TASK_FIELDS)
    from_api = TaskCreateRequest.model_validate(body, context={CONTEXT_CONFIG: cfg})
    from_stage = validate_task_fields(body, cfg)
    assert from_api.model_dump(exclude={"server"}) == from_stage.model_dump()
    assert (from_stage.sample_sql, from_stage.hive_table) == (SEED_README_BODY["sample_sql"], "hive_db.out")


def test_the_params_and_the_request_schema_are_the_models() -> None:
    request = TaskCreateRequest.model_json_schema()["properties"]
    params = param_schemas("local")
    for field, schema in field_schemas().items():
        assert request[field] == schema
        assert params[field] == {**schema, "type": ["null", "string"], "default": None}
    assert set(params) == {*TASK_FIELDS, "server", "task_id"}


def test_a_missing_field_is_named_first_in_field_order(cfg: WorkflowConfig) -> None:
    body = {k: v for k, v in SEED_README_BODY.items() if k not in ("infer_sql", "hive_table")}
    with pytest.raises(FieldError, match="^infer_sql: is required$"):
        validate_task_fields({**body, "name": ""}, cfg)
    with pytest.raises(FieldError, match="^name: "):
        validate_task_fields({**SEED_README_BODY, "name": "", "hive_table": "nope"}, cfg)
