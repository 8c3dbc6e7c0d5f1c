"""HDFS access through fsspec: file:// and plain paths (embedded default), hdfs:// and
webhdfs:// URLs for real clusters, with per-protocol options from config (hdfs.storage_options).

HDFS is what passes data between stages (a stage may run on any worker); a worker's local
copy is a cache, current when it holds the same files with the same sizes and modification
times as HDFS. A copy takes its source's modification time, so copies made on two workers
look the same to the transfer engine's resume check (size and mtime)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
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


def mtime_ns(info: dict[str, Any]) -> int | None:
    """A listing entry's modification time: local and pyarrow's HDFS say `mtime` (seconds or a
    datetime), WebHDFS `modificationTime` (milliseconds); None where the filesystem says neither."""
    value = info.get("mtime")
    if isinstance(value, datetime):
        return round(value.timestamp() * 1e9)
    if isinstance(value, int | float):
        return round(value * 1e9)
    if isinstance(info.get("modificationTime"), int | float):
        return int(info["modificationTime"]) * 1_000_000
    return None


def data_files(url: str, storage_options: dict[str, dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    fs, path = filesystem(url, storage_options)
    if not fs.exists(path):
        raise FileNotFoundError(f"{url} does not exist (did the Hive export run?)")
    listing = [i for i in fs.ls(path, detail=True) if i["type"] == "file" and is_data_file(i["name"])]
    return fs, sorted(listing, key=lambda i: i["name"])


def _local_name(info: dict[str, Any]) -> str:
    return info["name"].rstrip("/").rsplit("/", 1)[-1]


def is_current(listing: list[dict[str, Any]], local: Path) -> bool:
    """`local` holds exactly the listed files, each with its size and modification time."""
    if not local.is_dir() or any(mtime_ns(i) is None for i in listing):
        return False
    if sorted(p.name for p in local.iterdir()) != sorted(_local_name(i) for i in listing):
        return False
    for info in listing:
        stat = (local / _local_name(info)).stat()
        if (stat.st_size, stat.st_mtime_ns) != (info["size"], mtime_ns(info)):
            return False
    return True


def download_dir(url: str, local: Path, storage_options: dict[str, dict[str, Any]]) -> Copied:
    """Replace `local` with the data files under `url` (what a previous attempt left goes)."""
    fs, listing = data_files(url, storage_options)
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    copied = []
    for info in listing:
        target = local / _local_name(info)
        fs.get(info["name"], str(target))
        if (ns := mtime_ns(info)) is not None:
            os.utime(target, ns=(ns, ns))
        copied.append(target)
    return Copied(len(copied), sum(p.stat().st_size for p in copied), parquet_rows(copied))


def sync_dir(url: str, local: Path, storage_options: dict[str, dict[str, Any]]) -> tuple[Copied, bool]:
    """`local` made a current copy of `url`; True when it already was (nothing copied)."""
    _, listing = data_files(url, storage_options)
    if is_current(listing, local):
        files = sorted(local.iterdir())
        return Copied(len(files), sum(p.stat().st_size for p in files), parquet_rows(files)), True
    return download_dir(url, local, storage_options), False


def upload_file(local: Path, url_dir: str, storage_options: dict[str, dict[str, Any]]) -> Copied:
    """Replace the contents of `url_dir` with `local` (one file)."""
    fs, path = filesystem(url_dir, storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.makedirs(path, exist_ok=True)
    fs.put(str(local), f"{path.rstrip('/')}/{local.name}")
    return Copied(1, local.stat().st_size, parquet_rows([local]))


def copy_file(src_url: str, url_dir: str, storage_options: dict[str, dict[str, Any]]) -> Copied:
    """Replace the contents of `url_dir` with a copy of the file `src_url` (same filesystem)."""
    fs, src = filesystem(src_url, storage_options)
    if not fs.exists(src):
        raise FileNotFoundError(f"{src_url} does not exist")
    _, path = filesystem(url_dir, storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.makedirs(path, exist_ok=True)
    fs.cp_file(src, f"{path.rstrip('/')}/{src.rstrip('/').rsplit('/', 1)[-1]}")
    _, rows = parquet_schema(src_url, storage_options)
    return Copied(1, fs.size(src), rows)


def parquet_schema(url: str, storage_options: dict[str, dict[str, Any]]) -> tuple[pa.Schema, int]:
    """A Parquet file's schema and row count, read from its footer where it lies."""
    fs, path = filesystem(url, storage_options)
    if not fs.exists(path):
        raise FileNotFoundError(f"{url} does not exist")
    with fs.open(path, "rb") as f:
        meta = pq.ParquetFile(f).metadata
        return meta.schema.to_arrow_schema(), meta.num_rows
