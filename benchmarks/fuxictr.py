"""Our runner vs FuXiCTR's stock run_expid flow: the same demo experiment on the same data.

    python -m benchmarks.fuxictr [--rows 20000]

(a) ours: remote/runner.py train (in-memory feature processing, tensor batches);
(b) stock: FeatureProcessor + build_dataset + RankDataLoader + fit, as run_expid does.
Both run as child processes on identical train/valid splits; the last line printed is one JSON
object with wall time, AUC and peak RSS of each and the ratio ours/stock.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from fuxictr_workflow.synthetic import make_ctr_table, write_parquet_parts

REMOTE = Path(__file__).resolve().parents[1] / "plugins" / "fuxictr_workflow" / "remote"
CONFIG_DIR = REMOTE / "demo_config"
EXPID = "DeepFM_demo"

STOCK = r"""
import json, logging, os, sys
sys.path.insert(0, sys.argv[1])
from fuxictr.features import FeatureMap
from fuxictr.preprocess import FeatureProcessor, build_dataset
from fuxictr.pytorch.dataloaders import RankDataLoader
from fuxictr.pytorch.torch_utils import seed_everything
from fuxictr.utils import load_config
from demo_models import DeepFM
config_dir, expid, work, train, valid = sys.argv[2:7]
params = load_config(config_dir, expid)
params.update(model_root=work, data_root=work, train_data=train, valid_data=valid, test_data=None,
              verbose=0, gpu=-1, num_workers=1)
seed_everything(seed=params["seed"])
processor = FeatureProcessor(**params)
params["train_data"], params["valid_data"], params["test_data"] = build_dataset(processor, **params)
feature_map = FeatureMap(params["dataset_id"], processor.data_dir)
feature_map.load(os.path.join(processor.data_dir, "feature_map.json"), params)
model = DeepFM(feature_map, **params)
train_gen, valid_gen = RankDataLoader(feature_map, stage="train", **params)
model.fit(train_gen, validation_data=valid_gen, **params)
logs = model.evaluate(valid_gen, metrics=["AUC", "logloss"])
print(json.dumps({"event": "metrics", "auc": float(logs["AUC"]), "logloss": float(logs["logloss"])}))
"""


def run_child(cmd: list[str]) -> tuple[float, dict, float]:
    """Wall seconds, the child's last JSON metrics line, and its own peak RSS in MB (wait4)."""
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed:\n{stdout[-2000:]}\n{stderr[-3000:]}")
    metrics = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"event": "metrics"')][-1]
    return wall, metrics, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20000)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench_fuxictr_"))
    table = make_ctr_table(args.rows, seed=1)
    write_parquet_parts(table, root / "sample")
    # the same seeded split the runner makes, written out for the stock flow
    order = np.random.default_rng(2024).permutation(table.num_rows)
    n_valid = int(table.num_rows * 0.2)
    (root / "stock").mkdir()
    pq.write_table(table.take(order[n_valid:]), root / "stock" / "train.parquet")
    pq.write_table(table.take(order[:n_valid]), root / "stock" / "valid.parquet")

    stock_wall, stock, stock_rss = run_child(
        [sys.executable, "-c", STOCK, str(REMOTE), str(CONFIG_DIR), EXPID, str(root / "stock_work"),
         str(root / "stock" / "train.parquet"), str(root / "stock" / "valid.parquet")]
    )  # fmt: skip
    ours_wall, ours, ours_rss = run_child(
        [sys.executable, str(REMOTE / "runner.py"), "train", "--expid", EXPID, "--config-dir", str(CONFIG_DIR),
         "--data-dir", str(root / "sample"), "--work-dir", str(root / "ours_work"), "--seed", "2024"]
    )  # fmt: skip
    result = {
        "rows": args.rows,
        "ours_wall_s": round(ours_wall, 2),
        "stock_wall_s": round(stock_wall, 2),
        "ratio": round(ours_wall / stock_wall, 3),
        "ours_auc": round(ours["auc"], 4),
        "stock_auc": round(stock["auc"], 4),
        "ours_peak_rss_mb": round(ours_rss, 1),
        "stock_peak_rss_mb": round(stock_rss, 1),
    }
    print(json.dumps(result), flush=True)
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
