"""Staging, the workflow log files and the SQLite store are created for this user only
(directories 0700, files 0600) whatever the process's umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuxictr_workflow.files.private_files import make_private_dir
from fuxictr_workflow.store import WorkflowStore
from fuxictr_workflow.workflow_log import WorkflowLogger
from tests.conftest import new_task


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The common default umask, which leaves new files readable by every local account."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_every_missing_parent_is_made_0700(tmp_path: Path, open_umask: None) -> None:
    (tmp_path / "shared").mkdir(mode=0o755)
    target = make_private_dir(tmp_path / "shared" / "a" / "b" / "c")
    assert target.is_dir()
    assert [mode(tmp_path / "shared" / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3
    assert mode(tmp_path / "shared") == 0o755  # an existing directory is its owner's to set


def test_the_store_and_log_files_are_this_users_only(tmp_path: Path, open_umask: None) -> None:
    url = f"sqlite:///{tmp_path / 'home' / 'workflow.db'}"
    store = WorkflowStore(url, create=True)
    try:
        task_id = new_task(store)
        logger = WorkflowLogger(store, str(tmp_path / "home" / "logs" / "workflow"), 1_000_000)
        logger.info(task_id, "data_fetch", "a line with the task's SQL in it")
    finally:
        store.dispose()
    home = tmp_path / "home"
    assert mode(home) == 0o700
    db_files = [p for p in home.iterdir() if p.name.startswith("workflow.db")]
    assert db_files and all(mode(p) == 0o600 for p in db_files), {p.name: oct(mode(p)) for p in db_files}
    logs = home / "logs" / "workflow" / f"task_{task_id}"
    assert [mode(p) for p in (home / "logs", home / "logs" / "workflow", logs)] == [0o700] * 3
    files = list(logs.iterdir())
    assert files and all(mode(p) == 0o600 for p in files), {p.name: oct(mode(p)) for p in files}
