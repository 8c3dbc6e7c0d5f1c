"""Every model of a FuXiCTR model_zoo dir through our runner and through the stock flow.

    python -m benchmarks.model_zoo --zoo <FuxiCTR checkout>/model_zoo [--rows 5000] [--models DIN,MMoE]
        [--seed N]

Each model's own `<Model>_test` experiment (from its config/model_config.yaml) is pointed at
the synthetic data (make_ctr_table with behaviour=True, conversion=True) through a dataset
config of ours: models with a sequence/target field param get the DIN/BST-style sequence
dataset (adgroup_id + click_sequence sharing one embedding, no pooling encoder), multi-task
models (num_tasks > 1) the two-label one, the rest the plain one. (a) ours: remote/runner.py
train --model-zoo <zoo>; (b) stock: benchmarks/stock_flow.py with the model dir's `src`
package, as run_expid imports it. Same rows, same split, one at a time.

Progress goes to stderr; the last stdout line is one JSON object: models, stock_ok, ours_ok,
parity_ok (both trained and AUC within 0.01), ours_vs_stock_wall (median ratio over the models
both trained) and per_model (with each failure's error). With --stock-runs N the stock flow
runs N times per model and per_model has its AUCs and their spread (`stock_spread`): FuXiCTR's
loader shuffles without a seed, so a stock run does not reproduce itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks.harness import RUNNER, SEED, STOCK_FLOW, ChildFailed, run_child, write_stock_split
from fuxictr_workflow.demo.synthetic import make_ctr_table, write_parquet_parts

PARITY = 0.01
# Each feature names its `source` (user, item, context), as FuXiCTR's dataset configs may: the
# two-tower and field-group models (DSSM, FLEN) need it, the others ignore it.
PLAIN = [
    {"name": ["c1", "c2"], "active": True, "dtype": "str", "type": "categorical", "source": "user"},
    {"name": ["c3", "c4"], "active": True, "dtype": "str", "type": "categorical", "source": "item"},
    {"name": ["n1", "n2"], "active": True, "dtype": "float", "type": "numeric",
     "normalizer": "StandardScaler", "source": "context"},
]  # fmt: skip
SEQUENCE = [
    {"name": "adgroup_id", "active": True, "dtype": "str", "type": "categorical"},
    {"name": "click_sequence", "active": True, "dtype": "str", "type": "sequence", "splitter": "^",
     "max_len": 10, "share_embedding": "adgroup_id", "feature_encoder": None},
]  # fmt: skip
CLICK = {"name": "label", "dtype": "float"}
# Features of the zoo's tiny_parquet data a _test experiment names in its params, as ours of the
# same role (a user adapting the config to their data does the same).
CONTEXT_FEATURES = {"userid": "c1", "adgroup_id": "c3", "cate_id": "c4"}
DATASETS = {
    "bench_ctr": {"feature_cols": PLAIN, "label_col": CLICK},
    "bench_seq": {"feature_cols": PLAIN + SEQUENCE, "label_col": CLICK},
    "bench_mtl": {"feature_cols": PLAIN, "label_col": [CLICK, {"name": "conversion", "dtype": "float"}]},
}


def zoo_models(zoo: Path) -> list[tuple[str, Path]]:
    """(model name, the dir holding its `src` and `config`) for <M>/, <M>/<M>_torch/, multitask/<M>/."""
    found = []
    for parent in (zoo, zoo / "multitask"):
        for d in sorted(p for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []:
            for home in (d, d / f"{d.name}_torch"):
                if (home / "src").is_dir() and (home / "config" / "model_config.yaml").is_file():
                    found.append((d.name, home))
                    break
    return found


def dataset_for(params: dict[str, Any]) -> str:
    if int(params.get("num_tasks") or 1) > 1 or isinstance(params.get("loss"), list):
        return "bench_mtl"
    if any(k.endswith(("target_field", "sequence_field", "item_field")) for k in params):
        return "bench_seq"
    return "bench_ctr"


def experiment_config(home: Path, expid: str, target: Path, seed: int) -> str | None:
    """A config dir with the model's own model_config.yaml (expid pointed at our data) and our
    dataset_config.yaml; the dataset chosen, or None when the model has no such expid."""
    models = yaml.safe_load((home / "config" / "model_config.yaml").read_text())
    if expid not in models:
        return None
    dataset = dataset_for({**models.get("Base", {}), **models[expid]})
    models[expid]["dataset_id"] = dataset
    for key, names in models[expid].items():
        if key.endswith("_context") and isinstance(names, list):  # FinalMLP's feature-selection contexts
            models[expid][key] = [CONTEXT_FEATURES.get(n, n) for n in names]
    models[expid]["seed"] = seed  # the split's seed: both sides then also start from the same init
    target.mkdir(parents=True, exist_ok=True)
    (target / "model_config.yaml").write_text(yaml.safe_dump(models, sort_keys=False))
    datasets = {k: {"data_format": "parquet", "min_categr_count": 1, **v} for k, v in DATASETS.items()}
    (target / "dataset_config.yaml").write_text(yaml.safe_dump(datasets, sort_keys=False))
    return dataset


def trained(side: str, cmd: list[str], timeout: float) -> dict[str, Any]:
    try:
        wall, metrics, rss = run_child(cmd, timeout)
    except ChildFailed as err:
        return {f"{side}_ok": False, f"{side}_error": err.reason()}
    return {
        f"{side}_ok": True,
        f"{side}_auc": round(metrics["auc"], 4),
        f"{side}_wall_s": round(wall, 1),
        f"{side}_peak_rss_mb": round(rss, 1),
    }


def run_one(
    name: str, home: Path, zoo: Path, root: Path, split: tuple[Path, Path], args: argparse.Namespace
) -> dict[str, Any]:
    expid = f"{name}_test"
    config = root / "config" / name
    dataset = experiment_config(home, expid, config, args.seed)
    row: dict[str, Any] = {"model": name, "expid": expid, "dataset": dataset}
    if dataset is None:
        return {**row, "stock_ok": False, "ours_ok": False, "stock_error": f"no {expid} in its config"}
    stock = [sys.executable, str(STOCK_FLOW), str(config), expid, str(root / "stock" / name),
             str(split[0]), str(split[1]), str(home), "src"]  # fmt: skip
    ours = [sys.executable, str(RUNNER), "train", "--expid", expid, "--config-dir", str(config),
            "--data-dir", str(root / "sample"), "--work-dir", str(root / "ours" / name), "--seed", str(args.seed),
            "--model-zoo", str(zoo)]  # fmt: skip
    row.update(trained("stock", stock, args.timeout))
    row.update(trained("ours", ours, args.timeout))
    if row["stock_ok"] and row["ours_ok"]:
        row["parity"] = abs(row["ours_auc"] - row["stock_auc"]) <= PARITY
    if row["stock_ok"] and args.stock_runs > 1:
        # FuXiCTR's Ray Data loader shuffles unseeded: the same experiment, seed and data give
        # another AUC on every stock run. Its spread is the noise any comparison with it carries.
        again = [trained("stock", stock, args.timeout) for _ in range(args.stock_runs - 1)]
        aucs = [row["stock_auc"], *(r["stock_auc"] for r in again if r["stock_ok"])]
        row["stock_aucs"] = aucs
        row["stock_spread"] = round(max(aucs) - min(aucs), 4)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--zoo", required=True, type=Path, help="a FuXiCTR model_zoo dir")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--models", help="comma-separated subset of the zoo's model names")
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds per run before it counts as failed"
    )
    parser.add_argument(
        "--stock-runs",
        type=int,
        default=1,
        help="stock runs per model: >1 measures the stock flow's own spread",
    )
    parser.add_argument(
        "--seed", type=int, default=SEED, help="the split's and both trainings' seed (run-to-run noise)"
    )
    args = parser.parse_args(argv)
    zoo = args.zoo.resolve()
    models = zoo_models(zoo)
    if args.models:
        wanted = set(args.models.split(","))
        models = [(n, h) for n, h in models if n in wanted]
    if not models:
        parser.error(f"no models found in {zoo}")
    root = Path(tempfile.mkdtemp(prefix="bench_zoo_"))
    try:
        table = make_ctr_table(args.rows, seed=1, behaviour=True, conversion=True)
        write_parquet_parts(table, root / "sample")
        split = write_stock_split(table, root / "split", args.seed)
        rows = []
        for name, home in models:
            row = run_one(name, home, zoo, root, split, args)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    both = [r for r in rows if r.get("stock_ok") and r.get("ours_ok")]
    ratios = [r["ours_wall_s"] / r["stock_wall_s"] for r in both]
    summary = {
        "models": len(rows),
        "stock_ok": sum(bool(r.get("stock_ok")) for r in rows),
        "ours_ok": sum(bool(r.get("ours_ok")) for r in rows),
        "parity_ok": sum(bool(r.get("parity")) for r in rows),
        "ours_vs_stock_wall": round(statistics.median(ratios), 3) if ratios else None,
        "rows": args.rows,
        "seed": args.seed,
        "per_model": rows,
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
