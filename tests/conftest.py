"""Shared fixtures: a real sshd on 127.0.0.1, config files pointing at it, a store.

Service fixtures for other real components live in their own plugin modules under
tests/services/ and are registered in `pytest_plugins` below.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # scripts/ and benchmarks/ import as packages

from fuxictr_workflow.domain.config import WorkflowConfig, load_config  # noqa: E402
from fuxictr_workflow.store import WorkflowStore  # noqa: E402
from fuxictr_workflow.store.database import SCHEMA_VERSION  # noqa: E402
from fuxictr_workflow.workflow_log import WorkflowLogger  # noqa: E402
from scripts.sshd import LocalSshd, SshdInfo  # noqa: E402

pytest_plugins: list[str] = [
    "tests.services.postgres",
    "tests.services.browser",
    "tests.services.airflow_app",
    "tests.services.hive",
    "tests.services.security_api",  # after hive, whose session server it uses
    "tests.services.stress",  # before hive_restarts, which imports it
    "tests.services.hive_restarts",
]

VENV_PYTHON = str(REPO / ".venv" / "bin" / "python")


@pytest.fixture(scope="session")
def work_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdInfo]:
    """A real OpenSSH sshd on 127.0.0.1 (own host key, own user key, key-only)."""
    server = LocalSshd(tmp_path_factory.mktemp("sshd"))
    info = server.start()
    yield info
    server.stop()


@pytest.fixture(scope="session")
def sshd_server(sshd: SshdInfo) -> LocalSshd:
    """The controller of the session sshd (for fault tests: kill sessions, restart)."""
    return LocalSshd(sshd.dir)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., WorkflowConfig]:
    """Write a config.yaml under tmp_path (server 'local' from `sshd` if given) and load it.

    Keyword overrides are merged per section, e.g. make_config(sshd, transfer={"chunk_size": 1024}).
    Sets $FUXICTR_WORKFLOW_CONFIG to the file for the test's duration.
    """
    old = os.environ.get("FUXICTR_WORKFLOW_CONFIG")

    def make(ssh: SshdInfo | None = None, **sections: dict[str, Any]) -> WorkflowConfig:
        server: dict[str, Any] = {"host": "127.0.0.1", "username": "nobody", "port": 22}
        if ssh is not None:
            server = {
                "host": ssh.host,
                "port": ssh.port,
                "username": ssh.username,
                "key_path": ssh.key_path,
                "known_hosts": ssh.known_hosts,
                "python": VENV_PYTHON,
            }
        server["remote_root"] = str(tmp_path / "remote")
        data: dict[str, Any] = {
            "servers": {"local": server},
            "storage": {
                "staging_dir": str(tmp_path / "staging"),
                "log_dir": str(tmp_path / "logs" / "workflow"),
            },
            "store": {"url": f"sqlite:///{tmp_path / 'workflow.db'}"},
        }
        for section, values in sections.items():
            if isinstance(values, dict) and isinstance(data.get(section), dict):
                if section == "servers":
                    for name, overrides in values.items():
                        data["servers"][name] = {**data["servers"].get(name, {}), **overrides}
                else:
                    data[section] = {**data[section], **values}
            else:
                data[section] = values
        path = write_config(tmp_path / "config.yaml", data)
        os.environ["FUXICTR_WORKFLOW_CONFIG"] = str(path)
        return load_config(path)

    yield make  # type: ignore[misc]
    if old is None:
        os.environ.pop("FUXICTR_WORKFLOW_CONFIG", None)
    else:
        os.environ["FUXICTR_WORKFLOW_CONFIG"] = old


@pytest.fixture
def store(tmp_path: Path) -> WorkflowStore:
    s = WorkflowStore(f"sqlite:///{tmp_path / 'store.db'}", create=True)
    yield s  # type: ignore[misc]
    s.dispose()


@pytest.fixture
def wlogger(store: WorkflowStore, tmp_path: Path) -> WorkflowLogger:
    return WorkflowLogger(store, str(tmp_path / "logs" / "workflow"), 1_000_000)


def new_task(store: WorkflowStore, **overrides: Any) -> int:
    fields = {
        "name": "t",
        "experiment_id": "demo_exp",
        "sample_sql": "SELECT * FROM db.sample",
        "infer_sql": "SELECT * FROM db.infer",
        "hdfs_path": "/tmp/hdfs",
        "hive_table": "hive_db.predictions",  # the default config's output database
    }
    fields.update(overrides)
    return store.create_task(**fields)


def migrated_from(store: WorkflowStore, version: int, *undo: str) -> None:
    """Turn the store back into a version-`version` one (`undo`: the SQL that removes what the
    later migrations added), then migrate it up again as an upgraded deployment would."""

    def downgrade(conn: Any) -> None:
        for statement in undo:
            conn.exec_driver_sql(statement)
        conn.exec_driver_sql(f"DELETE FROM workflow_schema_version WHERE version > {int(version)}")

    store.db.write(downgrade)
    assert store.schema_version() == version
    assert store.init() == SCHEMA_VERSION


def newest_task_id(store: WorkflowStore) -> int | None:
    """The newest task's id (ids only grow): unchanged means no task was created meanwhile."""
    rows = store.list_tasks(limit=1)
    return int(rows[0]["id"]) if rows else None


# The fixtures that start an Airflow or Hive stack (directly or through the fixtures they use).
# A test that needs none of them is in the fast tier: `make test` runs that tier first and
# stops there on a failure; `make test-fast` runs it alone.
STACK_FIXTURES = frozenset({"hive_server", "api_server", "stack", "ui_stack", "browser"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


def _names(entry: Path, marker: str) -> bool:
    """The process's command line, environment or open files name `marker` (a process that
    retitles itself, as Airflow's do, overwrites its environment: its open files still tell)."""
    if marker.encode() in (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes():
        return True
    for fd in (entry / "fd").iterdir():
        try:
            if os.readlink(fd).startswith(marker):
                return True
        except OSError:
            continue
    return False


def leftover_processes(root: Path) -> list[str]:
    """Processes (other than this one) that name `root`: what the session's fixtures started
    and did not stop."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if _names(entry, str(root)):
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name}: {title[:160]}")
        except OSError:
            continue
    return found


LEFTOVER_GRACE_S = 30.0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every test stops what it started: a process of this session left running fails the run."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or getattr(factory, "_basetemp", None) is None:
        return
    # a process may be on its way out (an sshd connection child once its client has gone)
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while (left := leftover_processes(factory.getbasetemp())) and time.monotonic() < deadline:
        time.sleep(1)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "processes this session started and did not stop:\n  " + "\n  ".join(left)
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
