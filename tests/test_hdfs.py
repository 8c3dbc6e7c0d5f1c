"""fsspec legs of data_fetch/hive_upload on the embedded default (file:// and plain paths)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fuxictr_workflow import hdfs


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
