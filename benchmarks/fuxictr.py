"""Our runner vs FuXiCTR's stock run_expid flow: the same demo experiment on the same data.

    python -m benchmarks.fuxictr [--rows 20000] [--epochs N]

(a) ours: remote/runner.py train (streamed Parquet batches, on-disk blocks);
(b) stock: benchmarks/stock_flow.py (FeatureProcessor + build_dataset + RankDataLoader + fit,
    as run_expid does).
Both run as child processes on the same train/valid rows (the runner's split, written out for
the stock flow); the last line printed is one JSON object with wall time, AUC and peak RSS of
each and the ratio ours/stock. --epochs overrides the experiment's epochs for both (large
row counts at the demo's 4 epochs take long on a small machine).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.harness import DEMO, RUNNER, SEED, STOCK_FLOW, run_child, write_stock_split
from fuxictr_workflow.demo.synthetic import make_ctr_table, write_parquet_parts

CONFIG_DIR = DEMO / "fuxictr_config"
EXPID = "DeepFM_demo"
PART_ROWS = 1_000_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--epochs", type=int, help="override the experiment's epochs (both runs)")
    parser.add_argument("--skip-stock", action="store_true", help="time and measure only our runner")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench_fuxictr_"))
    config_dir = root / "config"
    shutil.copytree(CONFIG_DIR, config_dir)
    if args.epochs:
        models = yaml.safe_load((config_dir / "model_config.yaml").read_text())
        models[EXPID]["epochs"] = args.epochs
        (config_dir / "model_config.yaml").write_text(yaml.safe_dump(models, sort_keys=False))
    try:
        table = make_ctr_table(args.rows, seed=1)
        write_parquet_parts(table, root / "sample", parts=max(2, -(-args.rows // PART_ROWS)))
        train, valid = write_stock_split(table, root / "stock")
        del table
        stock_wall, stock, stock_rss = float("nan"), {"auc": float("nan")}, float("nan")
        if not args.skip_stock:
            stock_wall, stock, stock_rss = run_child(
                [sys.executable, str(STOCK_FLOW), str(config_dir), EXPID, str(root / "stock_work"),
                 str(train), str(valid), str(DEMO), "models"]
            )  # fmt: skip
        ours_wall, ours, ours_rss = run_child(
            [sys.executable, str(RUNNER), "train", "--expid", EXPID, "--config-dir", str(config_dir),
             "--data-dir", str(root / "sample"), "--work-dir", str(root / "ours_work"), "--seed", str(SEED),
             "--demo-models", str(DEMO / "models.py")]
        )  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "rows": args.rows,
        "epochs": args.epochs or "config",
        "ours_wall_s": round(ours_wall, 2),
        "stock_wall_s": None if args.skip_stock else round(stock_wall, 2),
        "ratio": None if args.skip_stock else round(ours_wall / stock_wall, 3),
        "ours_auc": round(ours["auc"], 4),
        "stock_auc": None if args.skip_stock else round(stock["auc"], 4),
        "ours_peak_rss_mb": round(ours_rss, 1),
        "stock_peak_rss_mb": None if args.skip_stock else round(stock_rss, 1),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
