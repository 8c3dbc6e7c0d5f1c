"""Stages train and infer: the runner shipped to a real sshd and real FuXiCTR training.

A stage's time is mostly the runner's start-up on the server (about 5 s of single-threaded
imports: torch, FuXiCTR's preprocessing), not training. So the train and infer runs of the
tests that check them (PIPELINES) all start when the first such test runs, on a pool of two
threads in the order the selected tests come, and use two cores: each test then waits for and
checks only its own task's outcome, and a run that fails fails its test alone. All tests share
one config, so the stages running in the background read the same one: server `local` has the
bundled demo config, server `zoo` the test zoo's config dir and model_zoo checkout, each with
its own remote_root.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fuxictr_workflow import paths
from fuxictr_workflow.config import WorkflowConfig, load_config
from fuxictr_workflow.operators.fuxictr import InferOperator, TrainOperator
from fuxictr_workflow.stages import StepStatus
from fuxictr_workflow.store import EpochRecord, WorkflowStore, get_store
from fuxictr_workflow.synthetic import make_ctr_table, write_parquet_parts
from scripts.sshd import SshdInfo
from tests.conftest import VENV_PYTHON, new_task, write_config
from tests.stage_runs import run_stage, stage_context

pytestmark = pytest.mark.timeout(600)

SAMPLE_ROWS, INFER_ROWS = 6000, 2000
ZOO = Path(__file__).resolve().parent / "fuxictr_zoo"
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "plugins" / "fuxictr_workflow" / "remote" / "demo_config"


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


@pytest.fixture(scope="module")
def cfg(sshd: SshdInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkflowConfig]:
    tmp = tmp_path_factory.mktemp("fuxictr")
    ssh = {
        "host": sshd.host,
        "port": sshd.port,
        "username": sshd.username,
        "key_path": sshd.key_path,
        "known_hosts": sshd.known_hosts,
        "python": VENV_PYTHON,
    }
    zoo = {"fuxictr_config_dir": str(ZOO / "config"), "model_zoo_path": str(ZOO / "model_zoo")}
    data = {
        "servers": {
            "local": {**ssh, "remote_root": str(tmp / "remote")},
            "zoo": {**ssh, "remote_root": str(tmp / "remote_zoo"), **zoo},
        },
        "storage": {"staging_dir": str(tmp / "staging"), "log_dir": str(tmp / "logs" / "workflow")},
        "store": {"url": f"sqlite:///{tmp / 'workflow.db'}"},
    }
    path = write_config(tmp / "config.yaml", data)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FUXICTR_WORKFLOW_CONFIG", str(path))
        yield load_config(path)


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


@pytest.fixture(scope="module")
def pipelines(cfg: WorkflowConfig, request: pytest.FixtureRequest) -> Iterator[Pipelines]:
    runs = Pipelines(cfg)
    for item in request.session.items:  # the selected tests of this module, in their order
        if getattr(item, "module", None) is request.module and "pipelines" in item.fixturenames:
            callspec = getattr(item, "callspec", None)
            wanted = PIPELINES_OF.get(item.originalname) or ([callspec.params["expid"]] if callspec else [])
            for expid in wanted:
                runs.start(expid)
    yield runs
    runs.pool.shutdown(wait=True, cancel_futures=True)


# ---------------- the tests ----------------


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


def test_train_then_infer(pipelines: Pipelines) -> None:
    run = pipelines.outcome("DeepFM_demo")
    metrics = run.train
    assert metrics["auc"] >= 0.70 and metrics["rows"] == SAMPLE_ROWS
    assert run.train_step["status"] == StepStatus.COMPLETED
    assert run.train_result["auc"] == metrics["auc"] and run.train_result["model"] == "DeepFM"
    messages = run.train_messages
    assert any(m.startswith("epoch 1 step") and "AUC" in m for m in messages), messages
    check_epochs(run, DEMO_CONFIG, "DeepFM_demo")

    (first, table), (_, again) = run.infers
    assert first["rows"] == INFER_ROWS == table.num_rows
    assert table.column_names == ["id", "score"]
    assert table["id"].to_pylist() == list(range(10**6, 10**6 + INFER_ROWS))
    scores = table["score"].to_pylist()
    assert all(0 < s < 1 for s in scores)

    assert again["score"].to_pylist() == scores
    marker = run.neighbour
    assert marker is not None
    assert marker.read_text() == "x" and sorted(p.name for p in marker.parent.iterdir()) == ["untouched"]


def test_unknown_expid_fails_clearly(cfg: WorkflowConfig) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local", experiment_id="NoSuchExp")
    stage_data(cfg, task_id)
    with pytest.raises(AirflowFailException, match="NoSuchExp"):
        run_stage(TrainOperator(task_id="train"), stage_context(task_id))
    failed = step(store, task_id, "train")
    assert (
        failed["status"] == StepStatus.FAILED
        and "experiment 'NoSuchExp' not found" in failed["error_message"]
    )


def test_missing_feature_column_fails_clearly(cfg: WorkflowConfig) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local", experiment_id="DeepFM_demo")
    stage_data(cfg, task_id, sample=make_ctr_table(500, seed=1).drop_columns(["c3"]))
    with pytest.raises(AirflowFailException):
        run_stage(TrainOperator(task_id="train"), stage_context(task_id))
    assert "column(s) c3 missing" in step(store, task_id, "train")["error_message"]


def test_killed_runner_fails_the_stage(cfg: WorkflowConfig) -> None:
    import subprocess

    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local", experiment_id="DeepFM_demo")
    stage_data(cfg, task_id, sample=make_ctr_table(60_000, seed=1))
    work_dir = paths.remote_work_dir(cfg.server("local").remote_root, task_id)

    def kill_when_running() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = subprocess.run(
                ["pgrep", "-f", f"runner.py train .*{work_dir}"], capture_output=True, text=True
            )
            if found.stdout.strip():
                time.sleep(1.0)
                subprocess.run(["pkill", "-9", "-f", f"runner.py train .*{work_dir}"])
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    with pytest.raises(Exception, match="runner"):
        run_stage(TrainOperator(task_id="train"), stage_context(task_id))
    killer.join()
    failed = step(store, task_id, "train")
    assert failed["status"] == StepStatus.FAILED and "runner" in failed["error_message"]


@pytest.mark.parametrize(
    ("expid", "source"),
    [
        # sized from sum_emb_out_dim() under use_features + feature_specs; <Model>/src with a relative import
        ("TinyWideDeep_test", "model_zoo/TinyWideDeep/src/TinyWideDeep.py"),
        # a class living in another model's package (like the zoo's GDCNP in GDCN/src)
        ("TinyDeepWide_test", "model_zoo/TinyWideDeep/src/TinyDeepWide.py"),
        # <Model>/<Model>_torch/src: the zoo's DeepFM, not the bundled demo DeepFM
        ("DeepFM_test", "model_zoo/DeepFM/DeepFM_torch/src/DeepFM.py"),
        # sequence feature sharing the candidate's embedding, DIN-style target attention
        ("TinyDIN_test", "model_zoo/TinyDIN/src/TinyDIN.py"),
    ],
)
def test_zoo_model_trains_and_scores(pipelines: Pipelines, expid: str, source: str) -> None:
    run = pipelines.outcome(expid)
    metrics = run.train
    assert metrics["model_source"] == str(ZOO / source)
    assert metrics["auc"] >= 0.70 and metrics["rows"] == SAMPLE_ROWS
    check_epochs(run, ZOO / "config", expid)

    [(result, table)] = run.infers
    assert result["rows"] == INFER_ROWS == table.num_rows
    assert table.column_names == ["id", "score"]
    assert all(0 < s < 1 for s in table["score"].to_pylist())


def test_multitask_zoo_model_scores_each_task(pipelines: Pipelines) -> None:
    run = pipelines.outcome("TinyMMoE_test")
    metrics = run.train
    assert metrics["model_source"] == str(ZOO / "model_zoo/multitask/TinyMMoE/src/TinyMMoE.py")
    assert set(metrics["tasks"]) == {"label", "conversion"}
    assert all(task["auc"] >= 0.70 for task in metrics["tasks"].values()), metrics
    messages = run.train_messages
    assert any("label_AUC" in m and "conversion_AUC" in m for m in messages), messages
    check_epochs(run, ZOO / "config", "TinyMMoE_test")  # each epoch's AUC: the tasks' mean

    [(_, table)] = run.infers
    assert table.column_names == ["id", "score_label", "score_conversion"]
    assert table.num_rows == INFER_ROWS
    clicks, conversions = table["score_label"].to_pylist(), table["score_conversion"].to_pylist()
    assert all(0 < s < 1 for s in clicks + conversions) and clicks != conversions


def test_model_missing_from_zoo_is_an_error_naming_the_dirs(cfg: WorkflowConfig) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    store = get_store(cfg.store.url)
    task_id = new_task(store, server="zoo", experiment_id="NotInZoo_test")
    stage_data(cfg, task_id, "zoo", extended=True)
    with pytest.raises(AirflowFailException, match="NotInZoo"):
        run_stage(TrainOperator(task_id="train"), stage_context(task_id))
    message = step(store, task_id, "train")["error_message"]
    assert "model 'NotInZoo' not found" in message
    for searched in ("NotInZoo/src", "NotInZoo/NotInZoo_torch/src", "multitask/NotInZoo/src"):
        assert str(ZOO / "model_zoo" / searched) in message, message


def test_demo_sequence_and_multitask_experiments(pipelines: Pipelines) -> None:
    """The bundled demo config's sequence and multi-task experiments on the extended synthetic data."""
    for expid, scores in (
        ("DeepFM_seq_demo", ["score"]),
        ("SharedBottom_mtl_demo", ["score_label", "score_conversion"]),
    ):
        run = pipelines.outcome(expid)
        assert run.train["auc"] >= 0.70, (expid, run.train)
        check_epochs(run, DEMO_CONFIG, expid)
        [(_, table)] = run.infers
        assert table.column_names == ["id", *scores] and table.num_rows == INFER_ROWS


def test_a_train_past_its_execution_timeout_is_stopped_by_its_follower(
    cfg: WorkflowConfig, pipelines: Pipelines, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow applies no execution_timeout while train is deferred: the trigger stops the job
    once it has run task.execution_timeout_s.train seconds (1 here; starting Python and torch
    alone takes longer), and the step fails naming the key, not retried."""
    import subprocess

    import yaml
    from airflow.sdk.exceptions import AirflowFailException

    from fuxictr_workflow.config import CONFIG_ENV

    # last in the module, and after its pipelines: the config below is the whole process's
    pipelines.settle()
    data = yaml.safe_load(Path(os.environ[CONFIG_ENV]).read_text())
    data["task"] = {"execution_timeout_s": {"train": 1}}
    path = write_config(tmp_path / "config.yaml", data)
    monkeypatch.setenv(CONFIG_ENV, str(path))
    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local", experiment_id="DeepFM_demo")
    stage_data(cfg, task_id)
    with pytest.raises(AirflowFailException, match="train ran longer than its execution_timeout of 1 s"):
        run_stage(TrainOperator(task_id="train"), stage_context(task_id))
    failed = step(store, task_id, "train")
    assert failed["status"] == StepStatus.FAILED
    assert "(config task.execution_timeout_s.train)" in failed["error_message"]
    assert "its train job on the training server was stopped" in failed["error_message"]
    work_dir = paths.remote_work_dir(cfg.server("local").remote_root, task_id)
    left = subprocess.run(["pgrep", "-f", f"runner.py train .*{work_dir}"], capture_output=True, text=True)
    assert left.stdout.strip() == ""
