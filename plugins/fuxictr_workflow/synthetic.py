"""Synthetic CTR data with a learnable signal, for the demo and the tests.

Columns: id (int64), c1-c4 (categorical strings), n1-n2 (floats), label (0/1, optional).
The click probability depends on c1, c2, n1 and an interaction of c3 and n2, so a model
that learns reaches a validation AUC well above 0.7 while a constant guess stays at 0.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CARDINALITY = {"c1": 50, "c2": 20, "c3": 10, "c4": 100}
FEATURES = (*CARDINALITY, "n1", "n2")


def make_ctr_table(rows: int, seed: int = 0, with_label: bool = True, id_start: int = 0) -> pa.Table:
    """`rows` rows; the same weights for every seed, so train and infer data share the signal."""
    weights = np.random.default_rng(12345)
    effects = {c: weights.normal(0, 1.0, n) for c, n in CARDINALITY.items()}
    rng = np.random.default_rng(seed)
    cats = {c: rng.integers(0, n, rows) for c, n in CARDINALITY.items()}
    n1 = rng.normal(0, 1, rows)
    n2 = rng.normal(0, 1, rows)
    logit = (
        -1.0
        + 1.2 * effects["c1"][cats["c1"]]
        + 0.8 * effects["c2"][cats["c2"]]
        + 0.9 * n1
        + 0.6 * effects["c3"][cats["c3"]] * n2
    )
    columns: dict[str, pa.Array] = {"id": pa.array(np.arange(id_start, id_start + rows, dtype=np.int64))}
    for c, values in cats.items():
        columns[c] = pa.array([f"{c}_{v}" for v in values])
    columns["n1"] = pa.array(n1)
    columns["n2"] = pa.array(n2)
    if with_label:
        columns["label"] = pa.array((rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64))
    return pa.table(columns)


def write_parquet_parts(table: pa.Table, directory: str | Path, parts: int = 2) -> list[Path]:
    """Split into `parts` files as Hive's export does (part-00000.parquet ...)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    step = max(1, -(-table.num_rows // parts))
    paths = []
    for i, offset in enumerate(range(0, max(table.num_rows, 1), step)):
        path = directory / f"part-{i:05d}.parquet"
        pq.write_table(table.slice(offset, step), path)
        paths.append(path)
    return paths
