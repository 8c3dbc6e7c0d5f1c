"""The workflow logger: store events for the WebSocket plus rotating per-task files."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from fuxictr_workflow.store import WorkflowStore
from fuxictr_workflow.workflow_log import WorkflowLogger
from tests.conftest import new_task

LIMIT = 4096


def _write(url: str, log_dir: str, task_id: int, writer: int, lines: int) -> None:
    logger = WorkflowLogger(WorkflowStore(url), log_dir, LIMIT)
    for i in range(lines):
        logger.info(task_id, "data_upload", f"writer={writer} line={i:05d} " + "x" * (i % 97))


def test_rotation_keeps_every_line_whole(store: WorkflowStore, tmp_path: Path) -> None:
    task_id = new_task(store)
    log_dir = str(tmp_path / "logs" / "workflow")
    writers, lines = 3, 120  # > 3 x LIMIT bytes in total, from three processes at once
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write, args=(store.url, log_dir, task_id, w, lines)) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * writers

    files = sorted((tmp_path / "logs" / "workflow" / f"task_{task_id}").glob("*.log"))
    assert len(files) >= 3
    longest = 0
    seen: list[str] = []
    for f in files:
        text = f.read_text()
        assert text.endswith("\n"), f"{f.name} ends mid-line"
        file_lines = text.splitlines()
        longest = max(longest, *(len(line) + 1 for line in file_lines))
        seen += file_lines
    for f in files:
        assert f.stat().st_size <= LIMIT, f"{f.name} is over the limit"
    assert longest < LIMIT
    assert len(seen) == writers * lines
    for w in range(writers):
        mine = [line for line in seen if f"writer={w} " in line]
        assert [int(line.split("line=")[1][:5]) for line in mine] == list(range(lines)), "lost or reordered"
    assert all(" [INFO] task_" in line and " data_upload: writer=" in line for line in seen)
    assert len(store.logs_after(task_id, limit=10_000)) == writers * lines
    # file names follow the seed's layout: <YYYY-MM-DD_HH-MM-SS>[_NNNN].log
    assert all(len(f.name.split("_")[0]) == 10 for f in files)


def test_multiline_message_stays_one_event(wlogger: WorkflowLogger, store: WorkflowStore) -> None:
    task_id = new_task(store)
    wlogger.error(task_id, "train", "Traceback:\n  boom")
    (event,) = store.logs_after(task_id)
    assert (event["level"], event["step"], event["message"]) == ("ERROR", "train", "Traceback:\n  boom")
    text = next(wlogger.task_dir(task_id).glob("*.log")).read_text()
    assert text.count("\n") == 2 and "\n      boom" in text


def test_level_is_validated(wlogger: WorkflowLogger, store: WorkflowStore) -> None:
    import pytest

    with pytest.raises(ValueError, match="level must be one of"):
        wlogger.log(new_task(store), None, "LOUD", "x")
