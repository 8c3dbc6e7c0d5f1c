"""Retention clean-up against the real store, the local staging and log dirs, a file:// HDFS
and the real sshd's task dirs: tasks finished before the cutoff lose their files and log rows;
a running task, a recent one and everything that is not a task dir keep theirs; a dry run
deletes nothing; the command line prints what it did."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from fuxictr_workflow.domain import paths
from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.retention import SWEEP_EVERY, SWEEP_STAMP, cleanup, sweep_host
from fuxictr_workflow.store import WorkflowStore, utcnow
from fuxictr_workflow.store.database import tasks
from scripts.sshd import SshdInfo
from tests.conftest import new_task

DAYS = 30


def age(store: WorkflowStore, task_id: int, status: str, days: float) -> None:
    """The task in `status`, last changed `days` ago."""
    when = utcnow() - timedelta(days=days)
    store.db.write(
        lambda conn: conn.execute(
            tasks.update().where(tasks.c.id == task_id).values(status=status, updated_at=when)
        )
    )


def leave_files(cfg: WorkflowConfig, store: WorkflowStore, task_id: int, hdfs_root: Path) -> list[Path]:
    """What a task leaves behind in each place, and a log row and a chunk row."""
    server_root = Path(cfg.server().remote_root)
    dirs = [
        paths.staging_task_dir(cfg.storage.staging_dir, task_id),
        Path(cfg.storage.log_dir) / paths.task_dirname(task_id),
        hdfs_root / paths.task_dirname(task_id),
        server_root / paths.task_dirname(task_id),
    ]
    for d in dirs:
        (d / "sub").mkdir(parents=True, exist_ok=True)
        (d / "sub" / "f").write_text("data")
    store.append_log(task_id, "train", "INFO", "a line")
    from fuxictr_workflow.store import ChunkSpec

    store.register_chunks(task_id, "data_upload", [ChunkSpec("a:0", "a", 0, 4, "4:1")])
    return dirs


@pytest.fixture
def setup(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo, tmp_path: Path
) -> tuple[WorkflowConfig, WorkflowStore, dict[str, int], dict[str, list[Path]]]:
    cfg = make_config(sshd)
    Path(cfg.server().remote_root).mkdir(mode=0o700)
    store = WorkflowStore(cfg.store.url, create=True)
    hdfs_root = tmp_path / "hdfs"
    ids, files = {}, {}
    for name, status, days in (
        ("old_completed", "completed", DAYS + 1),
        ("old_failed", "failed", DAYS + 5),
        ("old_cancelled", "cancelled", DAYS + 2),
        ("running", "running", DAYS + 3),  # a long-running task: never touched
        ("recent", "completed", DAYS - 1),
    ):
        ids[name] = new_task(store, name=name, hdfs_path=str(hdfs_root), server="local")
        files[name] = leave_files(cfg, store, ids[name], hdfs_root)
        age(store, ids[name], status, days)
    # not task dirs of ours: never touched
    (Path(cfg.server().remote_root) / "runner").mkdir()
    (Path(cfg.storage.staging_dir) / "task_x").mkdir()
    yield cfg, store, ids, files
    store.dispose()


def rows(store: WorkflowStore, task_id: int) -> dict[str, int]:
    return store.retention.record_counts(task_id)


def test_a_dry_run_lists_the_expired_tasks_files_and_deletes_nothing(setup: tuple) -> None:
    cfg, store, ids, files = setup
    report = cleanup(cfg, store, dry_run=True)
    expired = {ids["old_completed"], ids["old_failed"], ids["old_cancelled"]}
    assert set(report.expired) == expired and not report.errors, report.lines()
    listed = {(r.task_id, r.where) for r in report.removed}
    assert listed == {(t, w) for t in expired for w in ("staging", "logs", "hdfs", "server:local", "store")}
    assert all(d.exists() for fs in files.values() for d in fs)
    assert all(rows(store, t) == {"task_logs": 1, "transfer_chunks": 1} for t in ids.values())
    assert (
        report.lines()[-1].startswith("3 task(s) finished before")
        and "would remove 15 item(s)" in report.lines()[-1]
    )


def test_cleanup_removes_only_what_expired_finished_tasks_left(setup: tuple) -> None:
    cfg, store, ids, files = setup
    report = cleanup(cfg, store)
    assert not report.errors, report.lines()
    for name, dirs in files.items():
        expired = name.startswith("old_")
        assert [d.exists() for d in dirs] == [not expired] * 4, name
        assert rows(store, ids[name]) == (
            {"task_logs": 0, "transfer_chunks": 0} if expired else {"task_logs": 1, "transfer_chunks": 1}
        )
        assert store.get_task(ids[name])["name"] == name  # the task itself stays listed
    assert (Path(cfg.server().remote_root) / "runner").is_dir()
    assert (Path(cfg.storage.staging_dir) / "task_x").is_dir()
    # run again: nothing left to do
    again = cleanup(cfg, store)
    assert again.removed == [] and not again.errors


def test_each_host_sweeps_its_own_expired_staging_and_logs_once_per_interval(setup: tuple) -> None:
    """What a stage runs as it starts (operators/base.py): this host's staging and log dirs of
    expired tasks go; HDFS, the server and the store rows are the clean-up run's, and stay."""
    cfg, store, ids, files = setup
    report = sweep_host(cfg, store)
    assert report is not None and not report.errors, report
    assert report.expired == sorted(ids[n] for n in ("old_completed", "old_failed", "old_cancelled"))
    for name, (staging, logs, hdfs_dir, server_dir) in files.items():
        expired = name.startswith("old_")
        assert (staging.exists(), logs.exists()) == (not expired, not expired), name
        assert hdfs_dir.exists() and server_dir.exists(), name
        assert rows(store, ids[name])["task_logs"] == 1, name
    assert (Path(cfg.storage.staging_dir) / "task_x").is_dir()
    # once per SWEEP_EVERY on a host: what turns up meanwhile waits for the next sweep
    again = files["old_failed"][0] / "sub"
    again.mkdir(parents=True)
    assert sweep_host(cfg, store) is None and again.exists()
    stamp = Path(cfg.storage.staging_dir) / SWEEP_STAMP
    assert stamp.stat().st_mode & 0o777 == 0o600
    earlier = stamp.stat().st_mtime - SWEEP_EVERY.total_seconds() - 1
    os.utime(stamp, (earlier, earlier))
    report = sweep_host(cfg, store)
    assert report is not None and report.expired == [ids["old_failed"]] and not again.exists()
    # retention off: no sweep
    os.utime(stamp, (earlier, earlier))
    off = cfg.model_copy(update={"retention": cfg.retention.model_copy(update={"days": None})})
    assert sweep_host(off, store) is None


def test_a_task_retried_since_it_was_selected_keeps_its_rows(setup: tuple) -> None:
    cfg, store, ids, _ = setup
    cutoff = utcnow() - timedelta(days=DAYS)
    assert store.retention.still_expired(ids["old_failed"], cutoff)
    age(store, ids["old_failed"], "pending", 0)  # a retry reset it
    assert store.retention.purge_records(ids["old_failed"], cutoff) == {}
    assert rows(store, ids["old_failed"]) == {"task_logs": 1, "transfer_chunks": 1}


def test_an_unchecked_hdfs_path_is_never_acted_on(setup: tuple, tmp_path: Path) -> None:
    cfg, store, ids, files = setup
    bad = "/data/../etc"
    store.db.write(
        lambda conn: conn.execute(tasks.update().where(tasks.c.id == ids["old_failed"]).values(hdfs_path=bad))
    )
    report = cleanup(cfg, store)
    assert any(f"task {ids['old_failed']}: hdfs not cleaned: hdfs_path" in e for e in report.errors)
    assert files["old_failed"][2].exists()


def test_the_command_line_dry_run_and_days(setup: tuple) -> None:
    cfg, store, ids, files = setup
    env = {**os.environ, "FUXICTR_WORKFLOW_CONFIG": os.environ["FUXICTR_WORKFLOW_CONFIG"]}
    cli = [sys.executable, "-m", "fuxictr_workflow.cli", "cleanup"]
    out = subprocess.run([*cli, "--dry-run"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"task {ids['old_failed']}: would remove server:local " in out.stdout
    assert str(ids["running"]) not in [
        line.split(":")[0].removeprefix("task ") for line in out.stdout.splitlines()
    ]
    assert all(d.exists() for fs in files.values() for d in fs)
    # --days 34: only the task finished 35 days ago goes
    out = subprocess.run([*cli, "--days", "34"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].startswith("1 task(s) finished before")
    assert not any(d.exists() for d in files["old_failed"])
    assert all(d.exists() for d in files["old_completed"])
    bad = subprocess.run([*cli, "--days", "0"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "days must be > 0" in bad.stderr


def test_the_maintenance_dag_runs_the_cleanup_on_the_configured_schedule(
    setup: tuple, make_config: Callable[..., WorkflowConfig], sshd: SshdInfo
) -> None:
    from fuxictr_workflow.orchestration.maintenance_dag import (
        MAINTENANCE_DAG_ID,
        build_maintenance_dag,
        run_cleanup,
    )

    cfg, store, ids, files = setup
    dag = build_maintenance_dag(make_config(sshd, retention={"days": DAYS, "schedule": "15 3 * * *"}))
    assert dag is not None and dag.dag_id == MAINTENANCE_DAG_ID
    assert dag.schedule == "15 3 * * *" and list(dag.task_dict) == ["cleanup"]
    assert run_cleanup() == {"expired_tasks": 3, "removed": 15}  # what its task runs
    assert not any(d.exists() for d in files["old_completed"])
    assert build_maintenance_dag(make_config(sshd, retention={"days": None})) is None
