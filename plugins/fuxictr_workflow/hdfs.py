"""HDFS access through fsspec: file:// and plain paths (embedded default), hdfs:// and
webhdfs:// URLs for real clusters, with per-protocol options from config (hdfs.storage_options)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.parquet as pq


def filesystem(url: str, storage_options: dict[str, dict[str, Any]]) -> tuple[Any, str]:
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    return fsspec.core.url_to_fs(url, **storage_options.get(protocol, {}))


def is_data_file(name: str) -> bool:
    """Hive/Spark write _SUCCESS markers, .crc checksums and hidden staging files beside the parts."""
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(("_", ".")) and not base.endswith(".crc")


@dataclass
class Copied:
    files: int
    bytes: int
    rows: int


def parquet_rows(paths: list[Path]) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def download_dir(url: str, local: Path, storage_options: dict[str, dict[str, Any]]) -> Copied:
    """Replace `local` with the data files under `url` (what a previous attempt left goes)."""
    fs, path = filesystem(url, storage_options)
    if not fs.exists(path):
        raise FileNotFoundError(f"{url} does not exist (did the Hive export run?)")
    names = sorted(p for p in fs.ls(path, detail=False) if is_data_file(p))
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    copied = []
    for name in names:
        target = local / name.rsplit("/", 1)[-1]
        fs.get(name, str(target))
        copied.append(target)
    return Copied(len(copied), sum(p.stat().st_size for p in copied), parquet_rows(copied))


def upload_file(local: Path, url_dir: str, storage_options: dict[str, dict[str, Any]]) -> Copied:
    """Replace the contents of `url_dir` with `local` (one file)."""
    fs, path = filesystem(url_dir, storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.makedirs(path, exist_ok=True)
    fs.put(str(local), f"{path.rstrip('/')}/{local.name}")
    return Copied(1, local.stat().st_size, parquet_rows([local]))
