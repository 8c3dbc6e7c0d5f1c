"""FuXiCTR's stock flow for one experiment, as the zoo's run_expid.py runs it (the comparison
baseline of benchmarks/fuxictr.py and benchmarks/model_zoo.py); run as a child process:

    python benchmarks/stock_flow.py CONFIG_DIR EXPID WORK_DIR TRAIN.parquet VALID.parquet MODEL_DIR MODULE

MODEL_DIR holds MODULE (a zoo model's dir with its `src` package, or the demo's dir with
`models`); the class is getattr(MODULE, params["model"]), as run_expid does.
load_config, FeatureProcessor(**params), build_dataset, FeatureMap.load(json, params),
RankDataLoader(stage="train").make_iterator(), model.fit(..., **params): all FuXiCTR's own.
The last stdout line is {"event": "metrics", "auc": ..., "logloss": ...} (the task means for a
multi-task model).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from pathlib import Path

# Run as a script, this dir would come first on sys.path and benchmarks/fuxictr.py would
# shadow the fuxictr package.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]


def main(argv: list[str]) -> int:
    config_dir, expid, work, train, valid, model_dir, module = argv
    sys.path.insert(0, model_dir)
    from fuxictr.features import FeatureMap
    from fuxictr.preprocess import FeatureProcessor, build_dataset
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.torch_utils import seed_everything
    from fuxictr.utils import load_config

    logging.basicConfig(level=logging.WARNING)
    params = load_config(config_dir, expid)
    params.update(
        model_root=work, data_root=work, train_data=train, valid_data=valid, test_data=None, gpu=-1, verbose=0
    )
    seed_everything(seed=params["seed"])
    processor = FeatureProcessor(**params)
    params["train_data"], params["valid_data"], params["test_data"] = build_dataset(processor, **params)
    feature_map = FeatureMap(params["dataset_id"], processor.data_dir)
    feature_map.load(os.path.join(processor.data_dir, "feature_map.json"), params)
    model = getattr(importlib.import_module(module), params["model"])(feature_map, **params)
    train_gen, valid_gen = RankDataLoader(feature_map, stage="train", **params)
    model.fit(train_gen, validation_data=valid_gen, **params)
    metrics = list(dict.fromkeys([*params.get("metrics", []), "AUC", "logloss"]))
    logs = model.evaluate(valid_gen, metrics=metrics)
    print(json.dumps({"event": "metrics", "auc": float(logs["AUC"]), "logloss": float(logs["logloss"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
