"""fsspec legs of data_fetch/hive_upload on the embedded default (file:// and plain paths)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fuxictr_workflow.files import hdfs


def export_dir(root: Path) -> Path:
    """What Spark leaves behind an INSERT OVERWRITE DIRECTORY: parts, _SUCCESS, .crc files."""
    root.mkdir(parents=True)
    pq.write_table(pa.table({"id": [1, 2, 3]}), root / "part-00000.snappy.parquet")
    pq.write_table(pa.table({"id": [4, 5]}), root / "part-00001.snappy.parquet")
    (root / "_SUCCESS").write_bytes(b"")
    (root / ".part-00000.snappy.parquet.crc").write_bytes(b"crc")
    return root


@pytest.mark.parametrize("as_url", [False, True])
def test_download_copies_only_data_parts_and_replaces_old_files(tmp_path: Path, as_url: bool) -> None:
    remote = export_dir(tmp_path / "hdfs" / "task_1" / "sample")
    local = tmp_path / "staging" / "sample"
    local.mkdir(parents=True)
    (local / "part-stale.parquet").write_bytes(b"left by a previous attempt")
    url = f"file://{remote}" if as_url else str(remote)
    copied = hdfs.download_dir(url, local, {})
    assert sorted(p.name for p in local.iterdir()) == [
        "part-00000.snappy.parquet",
        "part-00001.snappy.parquet",
    ]
    assert (copied.files, copied.rows) == (2, 5)
    assert copied.bytes == sum(p.stat().st_size for p in local.iterdir())


def test_download_of_a_missing_export_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="did the Hive export run"):
        hdfs.download_dir(str(tmp_path / "nothing"), tmp_path / "local", {})


def test_upload_replaces_the_predictions_dir(tmp_path: Path) -> None:
    local = tmp_path / "predictions.parquet"
    pq.write_table(pa.table({"id": [1, 2], "score": [0.5, 0.25]}), local)
    remote = tmp_path / "hdfs" / "task_1" / "predictions"
    remote.mkdir(parents=True)
    (remote / "old.parquet").write_bytes(b"x")
    copied = hdfs.upload_file(local, f"file://{remote}", {})
    assert [p.name for p in remote.iterdir()] == ["predictions.parquet"]
    assert (copied.files, copied.rows, copied.bytes) == (1, 2, local.stat().st_size)


def test_storage_options_are_chosen_by_protocol(tmp_path: Path) -> None:
    fs, path = hdfs.filesystem(f"file://{tmp_path}", {"file": {"auto_mkdir": True}, "webhdfs": {"x": 1}})
    assert path == str(tmp_path) and fs.auto_mkdir
    assert not hdfs.is_data_file("d/_SUCCESS") and not hdfs.is_data_file("d/.x.crc")
    assert hdfs.is_data_file("d/part-00000-abc.snappy.parquet")


def test_copies_keep_their_source_mtime_and_a_current_copy_is_reused(tmp_path: Path) -> None:
    """Two workers' copies of one export look the same (size and mtime: the transfer engine's
    resume check); a current copy is not copied again; a changed export is."""
    remote = export_dir(tmp_path / "hdfs" / "task_1" / "sample")
    first, second = tmp_path / "worker1" / "sample", tmp_path / "worker2" / "sample"
    assert hdfs.sync_dir(str(remote), first, {})[1] is False
    assert hdfs.sync_dir(f"file://{remote}", second, {})[1] is False

    def stats(local: Path) -> list[tuple[str, int, int]]:
        return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in local.iterdir())

    assert stats(first) == stats(second)
    copied, cached = hdfs.sync_dir(str(remote), first, {})
    assert cached and (copied.files, copied.rows) == (2, 5)
    pq.write_table(pa.table({"id": [6]}), remote / "part-00002.snappy.parquet")
    copied, cached = hdfs.sync_dir(str(remote), first, {})
    assert not cached and (copied.files, copied.rows) == (3, 6)
    (first / "part-00000.snappy.parquet").write_bytes(b"damaged")
    assert hdfs.sync_dir(str(remote), first, {})[1] is False
    assert (first / "part-00000.snappy.parquet").read_bytes() == (
        remote / "part-00000.snappy.parquet"
    ).read_bytes()


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"mtime": 1.5}, 1_500_000_000),
        ({"mtime": datetime(2026, 1, 1, tzinfo=UTC)}, 1_767_225_600 * 10**9),
        ({"modificationTime": 1_700_000_000_123}, 1_700_000_000_123_000_000),
        ({"size": 3}, None),
    ],
)
def test_modification_times_of_each_filesystem(info: dict[str, Any], expected: int | None) -> None:
    assert hdfs.mtime_ns(info) == expected


def test_copy_within_hdfs_replaces_the_target_and_keeps_the_source(tmp_path: Path) -> None:
    source = tmp_path / "hdfs" / "task_1" / "results" / "predictions.parquet"
    source.parent.mkdir(parents=True)
    pq.write_table(pa.table({"id": [1, 2, 3], "score": [0.1, 0.2, 0.3]}), source)
    target = tmp_path / "hdfs" / "task_1" / "predictions"
    target.mkdir()
    (target / "left.parquet").write_bytes(b"x")
    copied = hdfs.copy_file(f"file://{source}", str(target), {})
    assert [p.name for p in target.iterdir()] == ["predictions.parquet"]
    assert source.read_bytes() == (target / "predictions.parquet").read_bytes()
    assert (copied.files, copied.rows) == (1, 3)
    schema, rows = hdfs.parquet_schema(str(source), {})
    assert (schema.names, rows) == (["id", "score"], 3)
    with pytest.raises(FileNotFoundError):
        hdfs.copy_file(str(tmp_path / "nothing.parquet"), str(target), {})
