"""Parquet parts to model batches in bounded memory, with FuXiCTR's own feature semantics.

Memory stays flat in the number of rows: FeatureProcessor.fit runs on a lazy scan of the
parts (FuXiCTR gathers its statistics with streaming queries); the rows are then read as
Arrow record batches, preprocessed and transformed by the fitted processor batch by batch,
and written to .npz blocks on disk; training reads the blocks back a window at a time,
shuffling the block order and the rows inside each window.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from errors import UserError

READ_ROWS = 65536
BLOCK_ROWS = 131072
WINDOW_BLOCKS = 4
ROW = "__fxw_row"
HASH_BUCKETS = 1 << 20


def data_files(data_dir: str) -> list[str]:
    """The Parquet parts of a dataset dir: *.parquet plus Hive's extension-less part-* files."""
    files = sorted(
        glob.glob(os.path.join(data_dir, "*.parquet")) + glob.glob(os.path.join(data_dir, "part-*"))
    )
    files = [f for f in dict.fromkeys(files) if not os.path.basename(f).startswith(("_", "."))]
    if not files:
        raise UserError(f"no Parquet files in {data_dir}")
    return files


def check_columns(files: list[str], required: list[str], data_dir: str) -> None:
    import pyarrow.parquet as pq

    for path in files:
        names = set(pq.read_schema(path).names)
        missing = [c for c in required if c not in names]
        if missing:
            raise UserError(
                f"column(s) {', '.join(missing)} missing from the data in {data_dir} "
                f"({os.path.basename(path)})"
            )


def read_batches(files: list[str], rows: int = READ_ROWS) -> Iterator[tuple[int, Any]]:
    """(global row offset, Arrow record batch) over all parts in order."""
    import pyarrow.parquet as pq

    offset = 0
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
            if batch.num_rows:
                yield offset, batch
                offset += batch.num_rows


def scan(files: list[str]) -> Any:
    """The parts as one polars LazyFrame (what FeatureProcessor.read_data builds), row-numbered."""
    import polars as pl

    frames = [pl.scan_parquet(f, low_memory=True) for f in files]
    return pl.concat(frames, how="vertical_relaxed").with_row_index(ROW)


def valid_expr(row: Any, seed: int, fraction: float) -> Any:
    """True for validation rows: a seeded hash of the global row number, so the split is the
    same however the rows are read or batched, and reproducible outside (benchmarks)."""
    import polars as pl

    return row.cast(pl.UInt64).hash(seed) % HASH_BUCKETS < int(round(fraction * HASH_BUCKETS))


def valid_mask(start: int, count: int, seed: int, fraction: float) -> np.ndarray:
    """valid_expr for rows start..start+count-1, as a numpy bool array."""
    import polars as pl

    rows = pl.Series(ROW, np.arange(start, start + count, dtype=np.uint64))
    return pl.select(valid_expr(pl.lit(rows), seed, fraction)).to_series().to_numpy()


def preprocess(processor: Any, batch: Any) -> Any:
    """FuXiCTR's own preprocess (fill_na, preprocess fns, list→joined sequences) on one batch."""
    import polars as pl
    import pyarrow as pa

    frame = pl.from_arrow(pa.Table.from_batches([batch]))
    return processor.preprocess(frame.lazy()).collect()


def required_columns(processor: Any, with_labels: bool) -> list[str]:
    """Raw columns the data must have: active features not derived by a `preprocess` fn."""
    cols = processor.feature_cols + (processor.label_cols if with_labels else [])
    return [c["name"] for c in cols if c.get("active", True) and not c.get("preprocess")]


def split_sizes(files: list[str], seed: int, fraction: float) -> tuple[int, int]:
    """(rows, validation rows), in one streaming query."""
    import polars as pl

    is_valid = valid_expr(pl.col(ROW), seed, fraction)
    counts = scan(files).select(pl.len(), is_valid.sum()).collect(engine="streaming")
    return int(counts[0, 0]), int(counts[0, 1] or 0)


def fit_processor(
    processor: Any, files: list[str], seed: int, fraction: float, params: dict[str, Any]
) -> None:
    """processor.fit on the training rows, as build_dataset calls it (meta vocab over all rows).
    FuXiCTR's fit gathers its statistics with streaming polars queries: memory stays flat."""
    import polars as pl
    from fuxictr.preprocess.build_dataset import merge_meta_ddf

    frame = scan(files)
    is_valid = valid_expr(pl.col(ROW), seed, fraction)
    train = processor.preprocess(frame.filter(~is_valid))
    valid = processor.preprocess(frame.filter(is_valid))
    kwargs = {k: v for k, v in params.items() if k not in ("train_ddf", "meta_ddf", "rebuild_dataset")}
    meta = merge_meta_ddf(processor, train, valid)
    processor.fit(train, meta_ddf=meta, rebuild_dataset=True, **kwargs)


def transform(processor: Any, frame: Any, columns: list[str]) -> dict[str, np.ndarray]:
    """FeatureProcessor.transform on one preprocessed batch, as arrays per model input column
    (sequences and pretrained vectors 2-D, as FuXiCTR's loaders stack them)."""
    batch = processor.transform({name: frame[name].to_numpy() for name in frame.columns})
    out = {}
    for name in columns:
        arr = np.asarray(batch[name])
        if arr.dtype == object:
            arr = np.array(arr.tolist())
        out[name] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr.astype(np.int64)
    return out


class BlockStore:
    """Transformed rows as .npz blocks of BLOCK_ROWS rows in a dir (any earlier content removed)."""

    def __init__(self, directory: Path, block_rows: int = BLOCK_ROWS) -> None:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        self.directory, self.block_rows = directory, block_rows
        self.blocks: list[Path] = []
        self.rows = 0
        self._pending: list[dict[str, np.ndarray]] = []
        self._pending_rows = 0

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(next(iter(arrays.values())))
        if n == 0:
            return
        self._pending.append(arrays)
        self._pending_rows += n
        self.rows += n
        while self._pending_rows >= self.block_rows:
            self._flush(self.block_rows)

    def close(self) -> None:
        if self._pending_rows:
            self._flush(self._pending_rows)

    def _flush(self, n: int) -> None:
        keys = self._pending[0].keys()
        merged = {k: np.concatenate([p[k] for p in self._pending]) for k in keys}
        path = self.directory / f"block_{len(self.blocks):05d}.npz"
        np.savez(path, **{k: v[:n] for k, v in merged.items()})
        self.blocks.append(path)
        rest = {k: v[n:] for k, v in merged.items()}
        self._pending = [rest] if len(next(iter(rest.values()))) else []
        self._pending_rows -= n

    @staticmethod
    def load(path: Path) -> dict[str, np.ndarray]:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}


class BlockBatches:
    """Dicts of tensors per batch (what FuXiCTR's loaders yield) from a BlockStore.

    Shuffled: each epoch a new block order, and rows shuffled within windows of WINDOW_BLOCKS
    blocks (a whole-dataset shuffle when the data fits in one window). Every batch is full
    except the last, so an epoch has ceil(rows / batch_size) steps, as FuXiCTR's has."""

    def __init__(self, store: BlockStore, batch_size: int, shuffle: bool = False, seed: int = 0) -> None:
        self.store, self.batch_size, self.shuffle, self.seed = store, batch_size, shuffle, seed
        self.epoch = 0

    def __len__(self) -> int:
        return -(-self.store.rows // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch

        blocks = list(self.store.blocks)
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            self.epoch += 1
            rng.shuffle(blocks)
        carry: list[dict[str, np.ndarray]] = []
        bs = self.batch_size
        for first in range(0, len(blocks), WINDOW_BLOCKS):
            parts = carry + [self.store.load(b) for b in blocks[first : first + WINDOW_BLOCKS]]
            arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            del parts
            n = len(next(iter(arrays.values())))
            if self.shuffle:
                order = rng.permutation(n)
                arrays = {k: v[order] for k, v in arrays.items()}
            end = n if first + WINDOW_BLOCKS >= len(blocks) else n // bs * bs
            for start in range(0, end, bs):
                yield {k: torch.from_numpy(v[start : start + bs]) for k, v in arrays.items()}
            carry = [{k: v[end:] for k, v in arrays.items()}] if end < n else []
