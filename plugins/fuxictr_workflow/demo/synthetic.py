"""Synthetic CTR data with a learnable signal, for the demo and the tests.

Columns: id (int64), c1-c4 (categorical strings), n1-n2 (floats), label (0/1, optional).
The click probability depends on c1, c2, n1 and an interaction of c3 and n2, so a model
that learns reaches a validation AUC well above 0.7 while a constant guess stays at 0.5.

Optional, for sequence and multi-task experiments (the column names FuXiCTR's model_zoo
test configs use for DIN/BST-style models):
- behaviour=True adds `adgroup_id` (the candidate item) and `click_sequence` (the items the
  user clicked before, "^"-joined, most of them from one interest group); a click is then
  also more likely when the candidate is in the user's interest group, a signal only a
  model that relates the sequence to the candidate can use.
- conversion=True adds a second label `conversion` (0/1, only ever 1 on a click), driven
  by c4 and n2.
Both draw from their own random stream, so the other columns stay what they were.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CARDINALITY = {"c1": 50, "c2": 20, "c3": 10, "c4": 100}
FEATURES = (*CARDINALITY, "n1", "n2")
ITEMS, INTERESTS, MAX_SEQUENCE = 200, 10, 10


def _behaviour(rows: int, rng: np.random.Generator) -> tuple[dict[str, pa.Array], np.ndarray]:
    """adgroup_id + click_sequence columns, and the logit term they carry."""
    interest = rng.integers(0, INTERESTS, rows)
    lengths = rng.integers(1, MAX_SEQUENCE + 1, rows)
    in_group = rng.integers(0, ITEMS // INTERESTS, (rows, MAX_SEQUENCE)) * INTERESTS + interest[:, None]
    anywhere = rng.integers(0, ITEMS, (rows, MAX_SEQUENCE))
    history = np.where(rng.random((rows, MAX_SEQUENCE)) < 0.8, in_group, anywhere)
    candidate = rng.integers(0, ITEMS, rows)
    sequences = ["^".join(f"a{v}" for v in items[:n]) for items, n in zip(history, lengths, strict=True)]
    columns = {"adgroup_id": pa.array([f"a{v}" for v in candidate]), "click_sequence": pa.array(sequences)}
    return columns, np.where(candidate % INTERESTS == interest, 1.8, -0.2)


def make_ctr_table(
    rows: int,
    seed: int = 0,
    with_label: bool = True,
    id_start: int = 0,
    behaviour: bool = False,
    conversion: bool = False,
) -> pa.Table:
    """`rows` rows; the same weights for every seed, so train and infer data share the signal."""
    weights = np.random.default_rng(12345)
    effects = {c: weights.normal(0, 1.0, n) for c, n in CARDINALITY.items()}
    extra = np.random.default_rng([seed, 1])
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
    if behaviour:
        behaviour_columns, term = _behaviour(rows, extra)
        columns.update(behaviour_columns)
        logit = logit + term
    if with_label:
        click = rng.random(rows) < 1 / (1 + np.exp(-logit))
        columns["label"] = pa.array(click.astype(np.int64))
        if conversion:
            p_convert = 1 / (1 + np.exp(-(-0.3 + 1.2 * effects["c4"][cats["c4"]] + 0.8 * n2)))
            columns["conversion"] = pa.array((click & (extra.random(rows) < p_convert)).astype(np.int64))
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
