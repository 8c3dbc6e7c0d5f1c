"""The embedded default (`make serve`, `make demo`) accepts the seed README's own example body
as written: its `hive_table` names `hive_db`, which the default creates and lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuxictr_workflow.domain.config import DEFAULT_CONFIG_PATH, load_config
from fuxictr_workflow.domain.task_fields import validate_task_fields
from fuxictr_workflow.domain.validation import FieldError
from scripts import demo
from scripts.sshd import SshdInfo
from tests.seed_example import SEED_README_BODY


def test_the_seed_example_body_passes_the_embedded_defaults_checks(sshd: SshdInfo, tmp_path: Path) -> None:
    cfg = load_config(demo.write_config(tmp_path, sshd, warehouse=tmp_path / "warehouse"))
    assert demo.SEED_EXAMPLE_DB in cfg.hive.output_databases
    fields = validate_task_fields(SEED_README_BODY, cfg)
    assert fields.hive_table == "hive_db.output_table"
    # the demo's own databases only: anything else is still refused
    with pytest.raises(FieldError, match="hive_table"):
        validate_task_fields({**SEED_README_BODY, "hive_table": "default.output_table"}, cfg)


def test_the_packaged_default_accepts_it_too() -> None:
    assert (
        validate_task_fields(SEED_README_BODY, load_config(DEFAULT_CONFIG_PATH)).hive_table
        == "hive_db.output_table"
    )
