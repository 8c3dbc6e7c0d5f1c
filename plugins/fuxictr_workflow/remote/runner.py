"""FuXiCTR train/infer on the training server: only the server's Python + fuxictr needed.

    runner.py train --expid EXP --config-dir DIR --data-dir DIR --work-dir DIR [--gpu N]
    runner.py infer --expid EXP --config-dir DIR --data-dir DIR --work-dir DIR --output FILE

Every stdout line is one JSON object with an "event" key: "progress" (epoch, step, loss,
metric), "metrics" (the final line of train/infer) or "error" (a user-facing reason; the
exit code is then 2). The experiment is loaded with FuXiCTR's own load_config rules; the
model class comes from --model-zoo (a directory of modules) or the bundled demo models.

Unlike run_expid, the data never goes through FuXiCTR's Ray-based build_dataset: the
feature processor is fitted on an in-memory polars frame and batches are sliced from
tensors, which on small and medium data is several times faster with the same model and
feature semantics.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


class UserError(Exception):
    """Something the user can fix: reported as one JSON error line, exit code 2."""


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, default=float), flush=True)


def load_params(config_dir: str, expid: str) -> dict[str, Any]:
    from fuxictr.utils import load_config

    try:
        return load_config(config_dir, expid)
    except Exception as err:
        raise UserError(f"experiment {expid!r} not found in {config_dir} ({err})") from None


def model_class(name: str, model_zoo: str | None) -> type:
    """The model by name: a module/package in the model_zoo dir, else the bundled demo models."""
    candidates = []
    if model_zoo:
        candidates += [Path(model_zoo) / f"{name}.py", Path(model_zoo) / name / "__init__.py"]
        candidates += [Path(p) for p in glob.glob(os.path.join(model_zoo, "*", "src", f"{name}.py"))]
    candidates.append(HERE / "demo_models.py")
    for path in candidates:
        if path.is_file():
            spec = importlib.util.spec_from_file_location(f"_zoo_{path.stem}", path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            if hasattr(module, name):
                return getattr(module, name)
    raise UserError(f"model {name!r} not found in model_zoo {model_zoo or '(none)'} or the demo models")


def read_frame(data_dir: str, required: list[str]) -> Any:
    import polars as pl

    files = sorted(
        glob.glob(os.path.join(data_dir, "*.parquet")) + glob.glob(os.path.join(data_dir, "part-*"))
    )
    files = [f for f in dict.fromkeys(files) if not os.path.basename(f).startswith(("_", "."))]
    if not files:
        raise UserError(f"no Parquet files in {data_dir}")
    frame = pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed")
    if frame.height == 0:
        raise UserError(f"the data in {data_dir} has no rows")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UserError(f"column(s) {', '.join(missing)} missing from the data in {data_dir}")
    return frame


def feature_names(params: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for col in params["feature_cols"]:
        if col.get("active", True):
            names += col["name"] if isinstance(col["name"], list) else [col["name"]]
    return names


def label_names(params: dict[str, Any]) -> list[str]:
    label = params["label_col"]
    return [c["name"] for c in (label if isinstance(label, list) else [label])]


def to_tensors(processor: Any, frame: Any, columns: list[str]) -> dict[str, Any]:
    """Preprocess + transform with the fitted FuXiCTR processor, as tensors per column."""
    import numpy as np
    import torch

    lazy = processor.preprocess(frame.lazy())
    data = lazy.collect()
    batch = processor.transform({c: data[c].to_numpy() for c in columns if c in data.columns})
    out = {}
    for name, values in batch.items():
        arr = np.asarray(values)
        out[name] = torch.from_numpy(
            arr.astype(np.float32) if arr.dtype.kind == "f" else arr.astype(np.int64)
        )
    return out


class Batches:
    """In-memory batches of tensors (what FuXiCTR's data loaders yield), optionally shuffled."""

    def __init__(
        self, tensors: dict[str, Any], batch_size: int, shuffle: bool = False, seed: int = 0
    ) -> None:
        self.tensors, self.batch_size, self.shuffle, self.seed = tensors, batch_size, shuffle, seed
        self.rows = len(next(iter(tensors.values())))
        self.epoch = 0

    def __len__(self) -> int:
        return -(-self.rows // self.batch_size)

    def __iter__(self) -> Any:
        import torch

        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.rows, generator=generator)
            self.epoch += 1
        for start in range(0, self.rows, self.batch_size):
            if self.shuffle:
                index = order[start : start + self.batch_size]
                yield {k: v[index] for k, v in self.tensors.items()}
            else:
                yield {k: v[start : start + self.batch_size] for k, v in self.tensors.items()}


def device_arg(gpu: int | None) -> int:
    if gpu is None:
        return -1
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"--gpu {gpu} was given but CUDA is not available on this server")
    return gpu


def train(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from fuxictr.preprocess import FeatureProcessor
    from fuxictr.pytorch.torch_utils import seed_everything

    started = time.monotonic()
    params = load_params(args.config_dir, args.expid)
    seed = args.seed if args.seed is not None else params.get("seed", 2024)
    seed_everything(seed=seed)
    features, labels = feature_names(params), label_names(params)
    frame = read_frame(args.data_dir, features + labels)
    order = np.random.default_rng(seed).permutation(frame.height)
    n_valid = max(1, int(frame.height * args.valid_fraction))
    if frame.height - n_valid < 1:
        raise UserError(f"too few rows ({frame.height}) in {args.data_dir} to split train/valid")
    valid_frame, train_frame = frame[order[:n_valid]], frame[order[n_valid:]]

    os.makedirs(args.work_dir, exist_ok=True)
    processor = FeatureProcessor(
        feature_cols=params["feature_cols"],
        label_col=params["label_col"],
        dataset_id=params["dataset_id"],
        data_root=args.work_dir,
    )
    processor.fit(
        processor.preprocess(train_frame.lazy()), min_categr_count=params.get("min_categr_count", 1)
    )
    columns = features + labels
    train_data = Batches(
        to_tensors(processor, train_frame, columns), params["batch_size"], shuffle=True, seed=seed
    )
    valid_data = Batches(to_tensors(processor, valid_frame, columns), params["batch_size"])

    params.update(model_root=args.work_dir, gpu=device_arg(args.gpu), verbose=0)
    model = model_class(params["model"], args.model_zoo)(processor.feature_map, **params)
    _report_progress(model)
    model.fit(train_data, epochs=params["epochs"], validation_data=valid_data)
    logs = model.evaluate(valid_data, metrics=["AUC", "logloss"])
    meta = {"expid": args.expid, "dataset_id": params["dataset_id"], "model": params["model"]}
    Path(args.work_dir, "train_meta.json").write_text(json.dumps(meta))
    return {
        "auc": round(float(logs["AUC"]), 6),
        "logloss": round(float(logs["logloss"]), 6),
        "rows": frame.height,
        "train_rows": train_frame.height,
        "valid_rows": valid_frame.height,
        "seconds": round(time.monotonic() - started, 2),
    }


def _report_progress(model: Any) -> None:
    """Print a progress line after each evaluation (epoch end with eval_steps=None)."""
    original_train_step = model.train_step
    original_checkpoint = model.checkpoint_and_earlystop
    losses: list[float] = []

    def train_step(batch: Any) -> Any:
        loss = original_train_step(batch)
        losses.append(float(loss.item()))
        return loss

    def checkpoint(logs: dict[str, Any], *a: Any, **kw: Any) -> Any:
        emit(
            "progress",
            epoch=model._epoch_index + 1,
            step=model._total_steps,
            loss=round(sum(losses) / max(len(losses), 1), 6),
            metric={k: round(float(v), 6) for k, v in logs.items()},
        )
        losses.clear()
        return original_checkpoint(logs, *a, **kw)

    model.train_step = train_step
    model.checkpoint_and_earlystop = checkpoint


def infer(args: argparse.Namespace) -> dict[str, Any]:
    import pickle

    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.monotonic()
    params = load_params(args.config_dir, args.expid)
    pickle_file = Path(args.work_dir, params["dataset_id"], "feature_processor.pkl")
    if not pickle_file.exists():
        raise UserError(f"no trained model for {args.expid!r} in {args.work_dir}: run train first")
    with open(pickle_file, "rb") as f:
        processor = pickle.load(f)
    processor.label_cols = []  # inference data has no label column; preprocess would select it
    features = feature_names(params)
    frame = read_frame(args.data_dir, features + args.id_columns)
    params.update(model_root=args.work_dir, gpu=device_arg(args.gpu), verbose=0)
    model = model_class(params["model"], args.model_zoo)(processor.feature_map, **params)
    model.load_weights(model.checkpoint)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{args.output}.tmp"
    writer = None
    for start in range(0, frame.height, args.batch_size):
        chunk = frame.slice(start, args.batch_size)
        scores = model.predict(Batches(to_tensors(processor, chunk, features), args.batch_size))
        table = chunk.select(args.id_columns).to_arrow().append_column("score", pa.array(scores))
        writer = writer or pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()
    os.replace(tmp, args.output)  # never a half-written predictions file
    return {"rows": frame.height, "output": args.output, "seconds": round(time.monotonic() - started, 2)}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "infer"):
        p = sub.add_parser(name)
        p.add_argument("--expid", required=True)
        p.add_argument("--config-dir", required=True)
        p.add_argument("--data-dir", required=True)
        p.add_argument("--work-dir", required=True)
        p.add_argument("--gpu", type=int)
        p.add_argument("--model-zoo")
    sub.choices["train"].add_argument("--valid-fraction", type=float, default=0.2)
    sub.choices["train"].add_argument("--seed", type=int)
    sub.choices["infer"].add_argument("--output", required=True)
    sub.choices["infer"].add_argument("--id-columns", nargs="+", default=["id"])
    sub.choices["infer"].add_argument("--batch-size", type=int, default=8192)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        result = (train if args.command == "train" else infer)(args)
    except UserError as err:
        emit("error", error=str(err))
        return 2
    emit("metrics", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
