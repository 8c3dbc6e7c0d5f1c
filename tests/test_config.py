"""config.yaml: the seed's defaults load, and invalid files fail naming the key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from fuxictr_workflow.domain.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    get_config,
    load_config,
    parse_config,
)

SERVER = {"host": "gpu-1", "username": "ml"}


def test_packaged_default_has_seed_values() -> None:
    cfg = load_config(DEFAULT_CONFIG_PATH)
    t = cfg.transfer
    assert (t.chunk_size, t.max_retries, t.parallel_workers, t.verify_checksum) == (10485760, 3, 4, True)
    assert (cfg.task.heartbeat_interval, cfg.task.log_rotation_size, cfg.task.retries) == (30, 104857600, 3)
    assert cfg.fuxictr.seed is None  # each experiment's own seed holds
    assert set(cfg.model_fields_set) >= {"servers", "storage", "transfer", "task"}
    assert cfg.default_server in cfg.servers


def test_env_var_selects_file_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "id_key"
    key.write_text("k")
    path = tmp_path / "conf" / "c.yaml"
    path.parent.mkdir()
    path.write_text(
        yaml.safe_dump(
            {"servers": {"a": {**SERVER, "key_path": "../id_key"}}, "storage": {"staging_dir": "stage"}}
        )
    )
    monkeypatch.setenv("FUXICTR_WORKFLOW_CONFIG", str(path))
    monkeypatch.setenv("FUXICTR_WORKFLOW_HOME", str(tmp_path / "home"))
    cfg = get_config()
    assert cfg.servers["a"].key_path == str(key)
    assert cfg.storage.staging_dir == str(path.parent / "stage")
    assert cfg.storage.log_dir == str(tmp_path / "home" / "logs" / "workflow")
    assert cfg.store.url == f"sqlite:///{tmp_path / 'home' / 'workflow.db'}"


def test_ssh_conn_id_server() -> None:
    cfg = parse_config({"servers": {"s": {"ssh_conn_id": "gpu_ssh"}}}, Path("/"))
    assert cfg.server().ssh_conn_id == "gpu_ssh"


def test_keys_nothing_reads_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    raw = {
        "servers": {"a": SERVER},
        "storage": {"shared_dir": "/s", "staging_dir": "/st", "checkpoint_dir": "/c"},
        "fuxictr": {"label_column": "label", "seed": 7},
    }
    with caplog.at_level("WARNING", logger="fuxictr_workflow.domain.config"):
        cfg = parse_config(raw, Path("/"))
    assert cfg.storage.staging_dir == "/st" and cfg.fuxictr.seed == 7
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [
        f"config {key}: ignored; will be refused in the next release"
        for key in ("storage.shared_dir", "storage.checkpoint_dir", "fuxictr.label_column")
    ]
    assert not hasattr(cfg.storage, "shared_dir") and not hasattr(cfg.fuxictr, "label_column")


def test_stage_retries_have_their_own_key(caplog: pytest.LogCaptureFixture) -> None:
    """task.retries sets the stages' Airflow retries; transfer.max_retries, which used to set
    them too, still does (with a warning naming task.retries) until task.retries is set."""
    cases = [
        {"task": {"retries": 1}, "transfer": {"max_retries": 6}},
        {"task": {"retries": 0}},
        {"transfer": {"max_retries": 5}},
    ]
    configs, warned = [], []
    for sections in cases:
        caplog.clear()
        with caplog.at_level("WARNING", logger="fuxictr_workflow.domain.config"):
            configs.append(parse_config({"servers": {"a": SERVER}, **sections}, Path("/")))
        warned.append([r.getMessage() for r in caplog.records])
    assert [(c.task.retries, c.transfer.max_retries) for c in configs] == [(1, 6), (0, 3), (5, 5)]
    assert warned[:2] == [[], []]
    assert len(warned[2]) == 1 and "set task.retries" in warned[2][0], warned

    # imported after the warnings were seen: importing Airflow reconfigures logging
    from fuxictr_workflow.orchestration.dag_factory import build_dag

    for cfg in configs:
        dag = build_dag(cfg.default_server, cfg)
        assert {t.retries for t in dag.tasks if t.task_id != "claim_task"} == {cfg.task.retries}


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"servers": {"a": SERVER}, "transfer": {"chunk_size": -1}}, "transfer.chunk_size: must be > 0"),
    (
        {"servers": {"a": SERVER}, "transfer": {"chunk_size": "10MB"}},
        "transfer.chunk_size: must be an integer",
    ),
    (
        {"servers": {"a": SERVER}, "transfer": {"parallel_workers": 0}},
        "transfer.parallel_workers: must be > 0",
    ),
    ({"servers": {"a": SERVER}, "transfer": {"max_retries": -2}}, "transfer.max_retries: must be >= 0"),
    ({"servers": {"a": SERVER}, "transfer": {"verify_checksum": "maybe"}}, "transfer.verify_checksum"),
    ({"servers": {"a": SERVER}, "transfer": {"chunk_sise": 5}}, "transfer.chunk_sise: unknown key"),
    ({"servers": {"a": SERVER}, "tasks": {}}, "tasks: unknown key"),
    ({"servers": {"a": SERVER}, "task": {"heartbeat_interval": 0}}, "task.heartbeat_interval: must be > 0"),
    ({"servers": {"a": SERVER}, "task": {"log_rotation_size": 1.5}}, "task.log_rotation_size"),
    ({"servers": {"a": {**SERVER, "key_path": "/nonexistent/key"}}}, "servers.a.key_path: key file"),
    ({"servers": {"a": {**SERVER, "port": 70000}}}, "servers.a.port: must be <= 65535"),
    ({"servers": {"a": {"host": "h"}}}, "servers.a: give either ssh_conn_id or host and username"),
    ({"servers": {}}, "servers: at least one training server"),
    ({"storage": {}}, "servers: required key is missing"),
    ({"servers": {"a": SERVER}, "default_server": "b"}, "default_server: 'b' is not one of the servers"),
    ({"servers": {"bad name": SERVER}}, "servers: server name 'bad name'"),
    ({"servers": {"gpu\n": SERVER}}, "servers: server name 'gpu\\n'"),
    ({"servers": {"a": SERVER}, "fuxictr": {"valid_fraction": 1.5}}, "fuxictr.valid_fraction: must be < 1"),
    ({"servers": {"a": SERVER}, "storage": "nope"}, "storage: must be a mapping"),
]


@pytest.mark.parametrize(("raw", "expected"), INVALID, ids=[e for _, e in INVALID])
def test_invalid_config_names_the_key(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, Path("/"))
    assert expected in str(err.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("servers: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- a\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(top)


def test_cli_reports_config_errors(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump({"servers": {"a": SERVER}, "transfer": {"chunk_size": 0}}))
    cli = Path(sys.executable).with_name("fuxictr-workflow")
    out = subprocess.run(
        [str(cli), "config", "check"],
        capture_output=True,
        text=True,
        env={**os.environ, "FUXICTR_WORKFLOW_CONFIG": str(bad)},
    )
    assert out.returncode == 2
    assert "transfer.chunk_size: must be > 0" in out.stderr
