"""FuXiCTR train/infer on the training server: only the server's Python + fuxictr needed.

    runner.py train --expid EXP --config-dir DIR --data-dir DIR --work-dir DIR [--gpu N]
    runner.py infer --expid EXP --config-dir DIR --data-dir DIR --work-dir DIR --output FILE

Every stdout line is one JSON object with an "event" key: "progress" (after each validation:
epoch, step, loss, metric), "epoch" (at each epoch's end: epoch, step, train_loss, auc,
logloss), "metrics" (the final line of train/infer; train's names the model) or "error" (a
user-facing reason; the exit code is then 2). The experiment is loaded with FuXiCTR's own
load_config rules; the model class is found by model_lookup.py.

What the model sees is what FuXiCTR's stock flow (run_expid) gives it: a FeatureProcessor
built from the experiment's params and fitted on the training rows, the FeatureMap loaded
from its feature_map.json *with* the params (group_id, embedding_dim, use_features,
feature_specs), batches holding exactly the feature map's features and labels, and
model.fit/evaluate called with the params. Only the data path differs (streaming.py): the
parts are streamed in bounded memory instead of going through build_dataset's in-memory
frames and the row-by-row collating loaders, which is where the stock flow spends its time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the bundle is a flat dir of modules next to this script
    sys.path.insert(0, str(HERE))

import streaming  # noqa: E402
from errors import UserError  # noqa: E402
from model_lookup import model_class  # noqa: E402

REPORTED_METRICS = ("AUC", "logloss")


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, default=float), flush=True)


def load_params(config_dir: str, expid: str) -> dict[str, Any]:
    from fuxictr.utils import load_config

    try:
        return load_config(config_dir, expid)
    except Exception as err:
        raise UserError(f"experiment {expid!r} not found in {config_dir} ({err})") from None


def device_arg(gpu: int | None) -> int:
    if gpu is None:
        return -1
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"--gpu {gpu} was given but CUDA is not available on this server")
    return gpu


def load_feature_map(params: dict[str, Any], data_dir: str) -> Any:
    """FeatureMap.load(json, params), exactly as run_expid builds the model's feature map."""
    from fuxictr.features import FeatureMap

    feature_map = FeatureMap(params["dataset_id"], data_dir)
    try:
        feature_map.load(os.path.join(data_dir, "feature_map.json"), params)
    except KeyError as err:
        raise UserError(f"use_features/feature_specs name {err} which is not a feature") from None
    return feature_map


def experiment(args: argparse.Namespace) -> tuple[dict[str, Any], type]:
    """The experiment's params and its model class, found before any data is read: an unknown
    expid or a model missing from the zoo fails at once, not after the feature processing pass
    (and an unknown expid before torch and FuXiCTR's preprocessing are even imported)."""
    params = load_params(args.config_dir, args.expid)
    return params, model_class(params["model"], args.model_zoo, args.demo_models)


def build_model(cls: type, params: dict[str, Any], feature_map: Any, args: argparse.Namespace) -> Any:
    """cls(feature_map, **params) as run_expid does; verbose=0 keeps FuXiCTR's progress
    bars off stdout, which carries only our JSON lines."""
    params.update(model_root=args.work_dir, gpu=device_arg(args.gpu), verbose=0)
    try:
        return cls(feature_map, **params)
    except Exception as err:
        where = _source(cls)
        raise UserError(
            f"model {params['model']} ({where}) could not be built: {type(err).__name__}: {err}"
        ) from err


def _source(cls: type) -> str:
    import inspect

    try:
        return inspect.getsourcefile(cls) or cls.__module__
    except TypeError:
        return cls.__module__


def metrics_result(logs: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """Validation metrics: `auc`, `logloss`, ... and, for multi-task models, `tasks` (per label)."""
    result: dict[str, Any] = {}
    tasks: dict[str, dict[str, float]] = {}
    for key, value in logs.items():
        label = next((lb for lb in labels if len(labels) > 1 and key.startswith(f"{lb}_")), None)
        if label is None:
            result[key.lower()] = round(float(value), 6)
        else:
            tasks.setdefault(label, {})[key[len(label) + 1 :].lower()] = round(float(value), 6)
    if tasks:
        result["tasks"] = tasks
    return result


def train(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    params, cls = experiment(args)
    from fuxictr.preprocess import FeatureProcessor
    from fuxictr.pytorch.torch_utils import seed_everything

    if args.seed is not None:
        params["seed"] = args.seed
    seed = params.setdefault("seed", 2024)
    seed_everything(seed=seed)
    files = streaming.data_files(args.data_dir)
    os.makedirs(args.work_dir, exist_ok=True)
    processor = FeatureProcessor(**{**params, "data_root": args.work_dir})
    streaming.check_columns(files, streaming.required_columns(processor, True), args.data_dir)

    rows, n_valid = streaming.split_sizes(files, seed, args.valid_fraction)
    if rows == 0:
        raise UserError(f"the data in {args.data_dir} has no rows")
    if n_valid == 0 or n_valid == rows:
        raise UserError(f"too few rows ({rows}) in {args.data_dir} to split train/valid")
    streaming.fit_processor(processor, files, seed, args.valid_fraction, params)
    feature_map = load_feature_map(params, processor.data_dir)

    # pass 2: transform every row once into train/valid blocks
    columns = [*feature_map.features, *feature_map.labels]
    cache = Path(args.work_dir, "cache")
    stores = streaming.BlockStore(cache / "train"), streaming.BlockStore(cache / "valid")
    for offset, batch in streaming.read_batches(files):
        is_valid = streaming.valid_mask(offset, batch.num_rows, seed, args.valid_fraction)
        arrays = streaming.transform(processor, streaming.preprocess(processor, batch), columns)
        stores[0].append({k: v[~is_valid] for k, v in arrays.items()})
        stores[1].append({k: v[is_valid] for k, v in arrays.items()})
    for store in stores:
        store.close()
    batch_size = params["batch_size"]
    train_data = streaming.BlockBatches(stores[0], batch_size, shuffle=params.get("shuffle", True), seed=seed)
    valid_data = streaming.BlockBatches(stores[1], batch_size)

    model = build_model(cls, params, feature_map, args)
    _report_training(model)
    fit_params = {k: v for k, v in params.items() if k not in ("data_generator", "validation_data")}
    model.fit(train_data, validation_data=valid_data, **fit_params)
    metrics = list(dict.fromkeys([*params.get("metrics", []), *REPORTED_METRICS]))
    logs = model.evaluate(valid_data, metrics=metrics)
    shutil.rmtree(cache, ignore_errors=True)
    source = _source(type(model))
    meta = {"expid": args.expid, "dataset_id": params["dataset_id"], "model": params["model"]}
    Path(args.work_dir, "train_meta.json").write_text(json.dumps({**meta, "model_source": source}))
    return {
        **metrics_result(logs, feature_map.labels),
        "model": params["model"],
        "model_source": source,
        "rows": rows,
        "train_rows": stores[0].rows,
        "valid_rows": stores[1].rows,
        "seconds": round(time.monotonic() - started, 2),
    }


def _report_training(model: Any) -> None:
    """Print a "progress" line after each evaluation (FuXiCTR evaluates the validation set every
    `eval_steps` steps, at each epoch's end by default) and an "epoch" line at each epoch's end:
    the epoch's mean training loss and the validation AUC and logloss of the evaluation made at
    its last step (None when the epoch did not end with one, e.g. eval_steps not dividing it).

    Each evaluation computes REPORTED_METRICS besides the monitored ones: early stopping reads
    only the monitored metrics from the result, so training is unchanged."""
    original_train_step = model.train_step
    original_checkpoint = model.checkpoint_and_earlystop
    original_evaluate = model.evaluate
    original_train_epoch = model.train_epoch
    since_eval: list[float] = []
    epoch_losses: list[float] = []
    evaluated: dict[str, Any] = {}  # the latest evaluation: its step and its metrics

    def train_step(batch: Any) -> Any:
        loss = original_train_step(batch)
        since_eval.append(float(loss.item()))
        epoch_losses.append(since_eval[-1])
        return loss

    def evaluate(data: Any, metrics: list[str] | None = None) -> Any:
        if metrics is not None:
            metrics = list(dict.fromkeys([*metrics, *REPORTED_METRICS]))
        return original_evaluate(data, metrics=metrics)

    def checkpoint(logs: dict[str, Any], *a: Any, **kw: Any) -> Any:
        emit(
            "progress",
            epoch=model._epoch_index + 1,
            step=model._total_steps,
            loss=round(_mean(since_eval), 6),
            metric={k: round(float(v), 6) for k, v in logs.items()},
        )
        since_eval.clear()
        evaluated.update(step=model._total_steps, logs=logs)
        return original_checkpoint(logs, *a, **kw)

    def train_epoch(data: Any) -> Any:
        epoch_losses.clear()
        done = original_train_epoch(data)
        logs = evaluated.get("logs", {}) if evaluated.get("step") == model._total_steps else {}
        emit(
            "epoch",
            epoch=model._epoch_index + 1,
            step=model._total_steps,
            train_loss=round(_mean(epoch_losses), 6) if epoch_losses else None,
            auc=_metric(logs, "AUC"),
            logloss=_metric(logs, "logloss"),
        )
        return done

    model.train_step = train_step
    model.evaluate = evaluate
    model.checkpoint_and_earlystop = checkpoint
    model.train_epoch = train_epoch


def _mean(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)


def _metric(logs: dict[str, Any], name: str) -> float | None:
    """A validation metric of the evaluation (for a multi-task model, its mean over the tasks)."""
    return round(float(logs[name]), 6) if name in logs else None


def score_columns(labels: list[str]) -> list[str]:
    """`score` for a single-task model; `score_<label>` per task for a multi-task one."""
    return ["score"] if len(labels) <= 1 else [f"score_{label}" for label in labels]


def infer(args: argparse.Namespace) -> dict[str, Any]:
    import pickle

    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.monotonic()
    params, cls = experiment(args)
    data_dir = Path(args.work_dir, params["dataset_id"])
    if not (data_dir / "feature_processor.pkl").exists():
        raise UserError(f"no trained model for {args.expid!r} in {args.work_dir}: run train first")
    with open(data_dir / "feature_processor.pkl", "rb") as f:
        processor = pickle.load(f)
    processor.label_cols = []  # inference data has no label column; preprocess would select it
    feature_map = load_feature_map(params, str(data_dir))
    files = streaming.data_files(args.data_dir)
    required = streaming.required_columns(processor, False)
    streaming.check_columns(files, [*required, *args.id_columns], args.data_dir)
    model = build_model(cls, params, feature_map, args)
    model.load_weights(model.checkpoint)
    labels, outputs = feature_map.labels, score_columns(feature_map.labels)
    columns = list(feature_map.features)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{args.output}.tmp"
    writer = None
    rows = 0
    for _offset, batch in streaming.read_batches(files, args.batch_size):
        arrays = streaming.transform(processor, streaming.preprocess(processor, batch), columns)
        store = _OneBatch(arrays)
        scores = model.predict(store)
        per_task = [scores[label] for label in labels] if isinstance(scores, dict) else [scores]
        table = pa.Table.from_batches([batch.select(args.id_columns)])
        for name, values in zip(outputs, per_task, strict=True):
            table = table.append_column(name, pa.array(values, pa.float64()))
        writer = writer or pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table)
        rows += batch.num_rows
    if writer is None:
        raise UserError(f"the data in {args.data_dir} has no rows")
    writer.close()
    os.replace(tmp, args.output)  # never a half-written predictions file
    return {
        "rows": rows,
        "output": args.output,
        "score_columns": outputs,
        "seconds": round(time.monotonic() - started, 2),
    }


class _OneBatch:
    """One transformed batch as the single-batch generator model.predict iterates."""

    def __init__(self, arrays: dict[str, Any]) -> None:
        self.arrays = arrays

    def __iter__(self) -> Any:
        import torch

        yield {k: torch.from_numpy(v) for k, v in self.arrays.items()}


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
        p.add_argument("--demo-models", help="the demo bundle's models file (the embedded demo's server)")
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
