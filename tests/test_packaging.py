"""The wheel a user installs carries everything the plugin reads at run time."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source")  # setuptools writes build/ next to setup.cfg
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, tracked.decode().split("\0")):
        if (REPO / rel).is_file():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, source / rel)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("fuxictr_workflow-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_has_templates_static_files_and_remote_code(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for hql in sorted((REPO / "include" / "sql").glob("*.hql")):
        assert any(n.endswith(f".data/data/share/fuxictr-workflow/sql/{hql.name}") for n in names), hql.name
    from fuxictr_workflow.ssh.runner_bundle import DEMO, RUNNER  # what train/infer copy to the server

    shipped = (*(f"remote/{name}" for name in RUNNER), *(f"demo/{name}" for name in DEMO))
    for rel in ("config.yaml", "api/static/index.html", *shipped):
        assert f"fuxictr_workflow/{rel}" in names, rel


def test_wheel_registers_the_plugin_and_the_cli(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    assert (
        parser["airflow.plugins"]["fuxictr_workflow"]
        == "fuxictr_workflow.orchestration.plugin:FuxiCTRWorkflowPlugin"
    )
    assert parser["console_scripts"]["fuxictr-workflow"] == "fuxictr_workflow.cli:main"


def test_templates_render_from_the_wheel_alone(
    wheel: zipfile.ZipFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the checkout, the operators render the same HiveQL from the wheel's copies."""
    from fuxictr_workflow.domain.sql_query import session_settings
    from fuxictr_workflow.orchestration.operators import hive

    export = {
        "datasets": [{"directory": "/tmp/h/task_1/sample", "sql": "SELECT 1"}],
        "session_settings": session_settings("spark"),
    }
    load = {
        "database": "demo",
        "table": "predictions",
        "columns": [("user_id", "BIGINT"), ("score", "DOUBLE")],
        "partition_column": "task_id",
        "directory": "/tmp/h/task_1/predictions",
        "task_id": 1,
        "owner_property": hive.OWNER_PROPERTY,
        "owner_value": hive.OWNER_VALUE,
    }
    from_checkout = [hive.render("export.hql", **export), hive.render("load_predictions.hql", **load)]
    prefix = tmp_path / "prefix"
    for name in wheel.namelist():
        if ".data/data/" in name:
            target = prefix / name.split(".data/data/", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(wheel.read(name))
    monkeypatch.setattr(sys, "prefix", str(prefix))
    monkeypatch.setattr(hive, "SQL_DIRS", (tmp_path / "no-checkout", *hive.sql_dirs()[1:]))
    assert [hive.render("export.hql", **export), hive.render("load_predictions.hql", **load)] == from_checkout
