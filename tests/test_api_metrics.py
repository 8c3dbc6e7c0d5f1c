"""Training metrics through the real API server: a task's per-epoch metrics (GET /tasks/{id})
and an experiment's history (GET /experiments/{experiment_id}/history) with its filters,
paging, path validation and per-DAG read rights.

The api-server has two training servers, so two DAGs: ``fuxictr_workflow`` (server ``local``)
and ``fuxictr_workflow__gpu2``, and the per-DAG auth manager of the security tests
(tests/services/dag_scoped_auth.py): ``alice`` may use only the local DAG, ``bob`` only the
gpu2 DAG, ``viewer`` reads both. No scheduler runs: the tasks and what their steps recorded
are written to the store the server reads, as the stages would.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest

from fuxictr_workflow.domain.stages import STAGE_NAMES
from fuxictr_workflow.store import EpochRecord, WorkflowStore
from tests.conftest import new_task
from tests.security.stack import call
from tests.services.airflow_app import ApiServer

pytestmark = pytest.mark.timeout(600)

EXPERIMENT = "exp_history"


@pytest.fixture(scope="module")
def api(security_api: ApiServer) -> ApiServer:
    """The session's api-server of the security tests (tests/services/security_api.py): its
    two servers, users and DAG scopes are the ones described above."""
    return security_api


def run_steps(store: WorkflowStore, task_id: int, results: dict[str, dict[str, Any]], upto: str) -> None:
    """Run the task's steps in order up to and including `upto`, each recording its result."""
    for step in STAGE_NAMES[: STAGE_NAMES.index(upto) + 1]:
        store.start_step(task_id, step)
        store.complete_step(task_id, step, results.get(step))


def test_task_detail_has_the_train_steps_epochs(api: ApiServer) -> None:
    store = api.store
    task_id = new_task(store, server="local")
    epochs = [
        EpochRecord(1, 0.71, 0.55, 0.62),
        EpochRecord(2, 0.74, 0.52, 0.5),
        EpochRecord(3, None, None, 0.45),
    ]
    assert store.append_job_lines(task_id, "train", "job-1", 0, 100, [("INFO", "epoch 1")], epochs[:2])
    assert store.append_job_lines(task_id, "train", "job-1", 100, 150, [], epochs[2:])
    assert store.append_job_lines(task_id, "infer", "job-2", 0, 10, [], [EpochRecord(1, 0.1, 0.1, 0.1)])
    status, task = call(api, "GET", f"/tasks/{task_id}")
    assert status == 200, task
    assert task["epochs"] == [
        {"epoch": 1, "auc": 0.71, "logloss": 0.55, "train_loss": 0.62},
        {"epoch": 2, "auc": 0.74, "logloss": 0.52, "train_loss": 0.5},
        {"epoch": 3, "auc": None, "logloss": None, "train_loss": 0.45},
    ]
    untrained = new_task(store, server="local")
    assert call(api, "GET", f"/tasks/{untrained}")[1]["epochs"] == []


@pytest.fixture(scope="module")
def history(api: ApiServer) -> dict[str, int]:
    """Tasks of EXPERIMENT: `done` (all six steps, completed), `trained` (up to infer, still
    running), `failed` (failed at train), `new` (nothing run), `other_server` (on gpu2, trained);
    and one task of another experiment."""
    store = api.store
    results = {
        "data_fetch": {"sample_rows": 6000, "infer_rows": 2000},
        "train": {"auc": 0.78, "logloss": 0.54, "model": "DeepFM", "rows": 6000},
        "infer": {"rows": 2000},
    }
    done = new_task(store, experiment_id=EXPERIMENT, server="local", name="done")
    run_steps(store, done, results, "hive_upload")
    trained = new_task(store, experiment_id=EXPERIMENT, server="local", name="trained")
    run_steps(store, trained, {**results, "train": {**results["train"], "auc": 0.8}}, "infer")
    failed = new_task(store, experiment_id=EXPERIMENT, server="local", name="failed")
    run_steps(store, failed, results, "data_upload")
    store.start_step(failed, "train")
    store.fail_step(failed, "train", "CUDA out of memory")
    new = new_task(store, experiment_id=EXPERIMENT, server="local", name="new")
    other_server = new_task(store, experiment_id=EXPERIMENT, server="gpu2", name="other_server")
    run_steps(store, other_server, results, "train")
    new_task(store, experiment_id="another_exp", server="local")
    return {"done": done, "trained": trained, "failed": failed, "new": new, "other_server": other_server}


def history_of(api: ApiServer, query: str = "", user: str = "admin", experiment: str = EXPERIMENT) -> Any:
    status, body = call(api, "GET", f"/experiments/{experiment}/history{query}", user=user)
    assert status == 200, body
    return body


def test_history_lists_the_experiments_tasks_with_their_outcome(
    api: ApiServer, history: dict[str, int]
) -> None:
    entries = history_of(api)
    names = ["other_server", "new", "failed", "trained", "done"]
    assert [e["task_id"] for e in entries] == [history[n] for n in names]  # newest first
    by_name = {e["name"]: e for e in entries}
    done = by_name["done"]
    task = api.store.get_task(history["done"], with_steps=False)
    assert done["status"] == "completed" and done["server"] == "local"
    assert (done["model"], done["auc"], done["logloss"]) == ("DeepFM", 0.78, 0.54)
    assert (done["sample_rows"], done["infer_rows"]) == (6000, 2000)
    assert done["created_at"].endswith("Z") and done["completed_at"].endswith("Z")
    expected = (task["completed_at"] - task["created_at"]).total_seconds()
    assert done["duration_s"] == pytest.approx(expected, abs=1e-3) and done["duration_s"] > 0
    trained = by_name["trained"]
    assert (trained["status"], trained["auc"], trained["infer_rows"]) == ("running", 0.8, 2000)
    assert trained["completed_at"] is None and trained["duration_s"] is None
    failed = by_name["failed"]
    assert failed["status"] == "failed" and failed["duration_s"] is not None
    assert (failed["model"], failed["auc"], failed["sample_rows"], failed["infer_rows"]) == (
        None,
        None,
        6000,
        None,
    )
    assert {k: v for k, v in by_name["new"].items() if k not in ("task_id", "name", "created_at")} == {
        "status": "pending", "server": "local", "completed_at": None, "duration_s": None, "model": None,
        "auc": None, "logloss": None, "sample_rows": None, "infer_rows": None,
    }  # fmt: skip
    assert history_of(api, experiment="no_such_experiment") == []


def test_history_filters_and_pages_like_the_task_list(api: ApiServer, history: dict[str, int]) -> None:
    ids = [e["task_id"] for e in history_of(api)]
    assert [e["task_id"] for e in history_of(api, "?limit=2")] == ids[:2]
    assert [e["task_id"] for e in history_of(api, "?limit=2&offset=2")] == ids[2:4]
    assert history_of(api, "?offset=5") == []
    assert [e["task_id"] for e in history_of(api, "?status=failed")] == [history["failed"]]
    assert [e["task_id"] for e in history_of(api, "?status=completed&limit=1000")] == [history["done"]]
    for query, field in [
        ("?limit=1001", "limit"),
        ("?limit=0", "limit"),
        ("?offset=-1", "offset"),
        ("?status=finished", "status"),
        ("?stauts=failed", "stauts"),  # a misspelt filter is refused, not ignored
    ]:
        status, body = call(api, "GET", f"/experiments/{EXPERIMENT}/history{query}")
        assert status == 422, (query, body)
        assert any(d["loc"][:1] == ["query"] and field in d["loc"] for d in body["detail"]), (query, body)


BAD_IDS = [
    ("bad id", "may only contain"),
    ("exp;rm", "may only contain"),
    ("$(reboot)", "may only contain"),
    ("ü-exp", "may only contain"),
    ("x" * 101, "at most 100 characters"),
]


@pytest.mark.parametrize(("experiment_id", "says"), BAD_IDS, ids=[f"bad-{i}" for i in range(len(BAD_IDS))])
def test_a_bad_experiment_id_is_422_naming_it(api: ApiServer, experiment_id: str, says: str) -> None:
    """The rule experiment_id is created with (validation.py) checks the path parameter."""
    path = f"/experiments/{urllib.parse.quote(experiment_id, safe='')}/history"
    status, body = call(api, "GET", path)
    assert status == 422, body
    assert [d["loc"] for d in body["detail"]] == [["path", "experiment_id"]], body
    assert says in body["detail"][0]["msg"], body


def test_history_shows_only_tasks_of_dags_the_caller_may_read(
    api: ApiServer, history: dict[str, int]
) -> None:
    local = {history[n] for n in ("done", "trained", "failed", "new")}
    assert {e["task_id"] for e in history_of(api, user="alice")} == local
    assert {e["task_id"] for e in history_of(api, user="bob")} == {history["other_server"]}
    assert {e["task_id"] for e in history_of(api, user="viewer")} == {*local, history["other_server"]}
    # paging counts only what the caller may see: bob's one task is his whole first page
    assert [e["task_id"] for e in history_of(api, "?limit=1", user="bob")] == [history["other_server"]]
    assert call(api, "GET", f"/experiments/{EXPERIMENT}/history", user=None)[0] == 401
