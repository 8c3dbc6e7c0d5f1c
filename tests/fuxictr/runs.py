"""Train and infer runs through the real runner on the session's sshd, shared by the demo-model
and zoo-model test modules (their fixtures: conftest.py).

A stage's time is mostly the runner's start-up on the server (about 5 s of single-threaded
imports: torch, FuXiCTR's preprocessing), not training. So the train and infer runs of the
tests that check them (PIPELINES) all start when a module's first such test runs, on a pool
of two threads in the order the selected tests come: each test then waits for and checks only
its own task's outcome, and a run that fails fails its test alone. Server `local` has the
bundled demo config, server `zoo` the test zoo's config dir and model_zoo checkout, each with
its own remote_root.
"""

from __future__ import annotations

import functools
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fuxictr_workflow.demo.synthetic import make_ctr_table, write_parquet_parts
from fuxictr_workflow.domain import paths
from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.domain.stages import StepStatus
from fuxictr_workflow.orchestration.operators.fuxictr import InferOperator, TrainOperator
from fuxictr_workflow.store import EpochRecord, WorkflowStore, get_store
from tests.conftest import new_task
from tests.stage_runs import run_stage, stage_context

SAMPLE_ROWS, INFER_ROWS = 6000, 2000
ZOO = Path(__file__).resolve().parents[1] / "fuxictr_zoo"
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "plugins" / "fuxictr_workflow" / "demo" / "fuxictr_config"


@functools.cache
def sample_table(extended: bool) -> pa.Table:
    """The training rows; `extended` adds the behaviour sequence and the conversion label."""
    return make_ctr_table(SAMPLE_ROWS, seed=1, behaviour=extended, conversion=extended)


@functools.cache
def infer_table(extended: bool) -> pa.Table:
    return make_ctr_table(INFER_ROWS, seed=2, with_label=False, id_start=10**6, behaviour=extended)


def stage_data(
    cfg: WorkflowConfig, task_id: int, server: str = "local", extended: bool = False, sample: Any = None
) -> None:
    """Put Parquet data where data_upload leaves it on the server (same machine here)."""
    root = cfg.server(server).remote_root
    write_parquet_parts(
        sample if sample is not None else sample_table(extended),
        paths.remote_dataset_dir(root, task_id, "sample"),
    )
    write_parquet_parts(infer_table(extended), paths.remote_dataset_dir(root, task_id, "infer"))


def step(store: WorkflowStore, task_id: int, name: str) -> dict[str, Any]:
    return next(s for s in store.get_task(task_id)["steps"] if s["step_name"] == name)


def failed_train(
    cfg: WorkflowConfig,
    experiment_id: str,
    match: str,
    *,
    server: str = "local",
    extended: bool = False,
    sample: Any = None,
) -> tuple[int, dict[str, Any]]:
    """Train a new task of `experiment_id` on staged data, which must fail the stage (Airflow's
    fail exception, its message matching `match`) and its step; returns the task id and step."""
    from airflow.sdk.exceptions import AirflowFailException

    store = get_store(cfg.store.url)
    task_id = new_task(store, server=server, experiment_id=experiment_id)
    stage_data(cfg, task_id, server, extended, sample)
    with pytest.raises(AirflowFailException, match=match):
        run_stage(TrainOperator(task_id="train"), stage_context(task_id))
    failed = step(store, task_id, "train")
    assert failed["status"] == StepStatus.FAILED, failed
    return task_id, failed


# ---------------- the pipelines: one task trained, then scored ----------------


@dataclass(frozen=True)
class Pipeline:
    server: str = "local"
    extended: bool = False  # the behaviour sequence and the conversion label (sample_table)
    infers: int = 1
    neighbour: bool = False  # another task's dir with a file in it, made before training


@dataclass
class Outcome:
    task_id: int
    train: dict[str, Any]  # train's result, and as the store had it right after train:
    train_step: dict[str, Any]
    train_result: dict[str, Any]
    train_messages: list[str]
    train_epochs: list[EpochRecord]
    infers: list[tuple[dict[str, Any], pa.Table]]  # each infer's result and the file it wrote
    neighbour: Path | None


ZOO_MODEL = Pipeline(server="zoo", extended=True)
PIPELINES = {
    "DeepFM_demo": Pipeline(infers=2, neighbour=True),
    "DeepFM_seq_demo": Pipeline(extended=True),
    "SharedBottom_mtl_demo": Pipeline(extended=True),
    "TinyWideDeep_test": ZOO_MODEL,
    "TinyDeepWide_test": ZOO_MODEL,
    "DeepFM_test": ZOO_MODEL,
    "TinyDIN_test": ZOO_MODEL,
    "TinyMMoE_test": ZOO_MODEL,
}
# which pipelines each test checks (test_zoo_model_trains_and_scores: its `expid` parameter)
PIPELINES_OF = {
    "test_train_then_infer": ["DeepFM_demo"],
    "test_multitask_zoo_model_scores_each_task": ["TinyMMoE_test"],
    "test_demo_sequence_and_multitask_experiments": ["DeepFM_seq_demo", "SharedBottom_mtl_demo"],
}


def run_pipeline(cfg: WorkflowConfig, expid: str) -> Outcome:
    p = PIPELINES[expid]
    store = get_store(cfg.store.url)
    root = cfg.server(p.server).remote_root
    task_id = new_task(store, server=p.server, experiment_id=expid)
    stage_data(cfg, task_id, p.server, p.extended)
    marker = None
    if p.neighbour:
        other = Path(paths.remote_task_dir(root, new_task(store, server=p.server, experiment_id=expid)))
        other.mkdir(parents=True)
        marker = other / "untouched"
        marker.write_text("x")
    train = run_stage(TrainOperator(task_id="train"), stage_context(task_id))
    train_step, train_result = step(store, task_id, "train"), store.step_result(task_id, "train")
    messages = [e["message"] for e in store.logs_after(task_id)]
    epochs = store.epochs(task_id, "train")
    infers = []
    for _ in range(p.infers):
        result = run_stage(InferOperator(task_id="infer"), stage_context(task_id))
        infers.append((result, pq.read_table(paths.remote_predictions(root, task_id))))
    return Outcome(task_id, train, train_step, train_result, messages, epochs, infers, marker)


class Pipelines:
    """The module's pipelines on a pool of two threads, started in the order the tests need them."""

    def __init__(self, cfg: WorkflowConfig) -> None:
        self.cfg = cfg
        get_store(cfg.store.url)  # made once here, not by two pipelines at once
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pipeline")
        self.started: dict[str, Future[Outcome]] = {}

    def start(self, expid: str) -> None:
        if expid not in self.started:
            self.started[expid] = self.pool.submit(run_pipeline, self.cfg, expid)

    def settle(self) -> None:
        """Wait until every pipeline started so far has ended (well or not)."""
        wait(self.started.values())

    def outcome(self, expid: str) -> Outcome:
        self.start(expid)
        return self.started[expid].result()


def epochs_to_run(aucs: list[float], configured: int, patience: int) -> int:
    """How many epochs FuXiCTR trains with monitor AUC (max) given each epoch's AUC: it stops
    once `patience` evaluations in a row did not improve on the best (checkpoint_and_earlystop)."""
    best, stalled = float("-inf"), 0
    for done, auc in enumerate(aucs, 1):
        if auc < best + 1e-6:
            stalled += 1
        else:
            best, stalled = auc, 0
        if stalled >= patience or done == configured:
            return done
    return len(aucs)


def check_epochs(run: Outcome, config_dir: Path, expid: str) -> None:
    """One stored epoch per epoch trained, numbered from 1, with plausible values, and the final
    AUC that of the best epoch (FuXiCTR reloads the best checkpoint before the final evaluation)."""
    from fuxictr.utils import load_config as load_experiment

    params = load_experiment(str(config_dir), expid)
    assert (params["monitor"], params["monitor_mode"]) == ("AUC", "max"), "epochs_to_run assumes these"
    epochs = run.train_epochs
    aucs = [e.auc for e in epochs]
    assert [e.epoch for e in epochs] == list(range(1, len(epochs) + 1)), epochs
    assert all(a is not None and 0 < a < 1 for a in aucs), epochs
    assert all(e.logloss is not None and e.logloss > 0 for e in epochs), epochs
    assert all(e.train_loss is not None and e.train_loss > 0 for e in epochs), epochs
    assert len(epochs) == epochs_to_run(aucs, params["epochs"], params["early_stop_patience"]), epochs
    assert abs(max(aucs) - run.train["auc"]) < 1e-4, (epochs, run.train)
