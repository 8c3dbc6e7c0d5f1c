"""A DAG run and its workflow task (issue 29, item 1), attacked with runs the real Airflow
api-server creates for users with rights on one DAG only.

The shared stack (stack.py) has two training servers, so two DAGs: ``fuxictr_workflow``
(server ``local``, A) and ``fuxictr_workflow__gpu2`` (server ``gpu2``, B). ``bob`` may trigger
B's DAG only, ``alice`` A's only. The attackers create real DAG runs through Airflow's REST
API, with the run ids and confs an attack needs; the stack has no scheduler, so this module
runs the run's claim_task (and a stage) the way the task runner does, in this process, with
the run's context as Airflow has it: dag_id, run id, conf and the DAG's params merged with it,
and task instance and run states read from Airflow's REST API. What follows a failed run gets the
run as Airflow has it. Each attack must leave A's task as it was: its run, status, steps
and log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowRescheduleException

from fuxictr_workflow.domain.config import get_config
from fuxictr_workflow.orchestration import airflow_stops
from fuxictr_workflow.orchestration.dag_params import CLAIM_TASK_ID, param_schemas
from fuxictr_workflow.orchestration.operators.claim import ClaimTaskOperator
from fuxictr_workflow.orchestration.operators.hive import HiveExportOperator
from fuxictr_workflow.store import WorkflowStore
from fuxictr_workflow.workflow_log import get_logger
from tests.conftest import newest_task_id
from tests.security.stack import ALLOWED_PREFIX, DB, MAIN, OTHER, call, token
from tests.services.airflow_app import ApiServer

pytestmark = pytest.mark.timeout(600)

SECRET = "secret_of_a_4711"
BODY_A = {
    "name": "task_a",
    "experiment_id": "exp_001",
    "sample_sql": f"SELECT * FROM train_data WHERE {SECRET} = 1",
    "infer_sql": "SELECT * FROM infer_data",
    "hdfs_path": f"{ALLOWED_PREFIX}/a",
    "hive_table": f"{DB}.out_a",
}
# what bob's own runs on B's DAG carry: valid fields of his own
FIELDS_B = {
    **BODY_A,
    "name": "task_b",
    "sample_sql": "SELECT * FROM gpu2_data",
    "hdfs_path": f"{ALLOWED_PREFIX}/b",
}


@pytest.fixture(scope="module")
def stack(security_api: ApiServer) -> Iterator[ApiServer]:
    """The shared api-server, and its config for the operators run in this process."""
    config = security_api.env["FUXICTR_WORKFLOW_CONFIG"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FUXICTR_WORKFLOW_CONFIG", config)
        patch.delenv("AIRFLOW_TEST_MODE", raising=False)
        yield security_api


def run_path(dag_id: str, run_id: str) -> str:
    return f"{dag_id}/dagRuns/{quote(run_id, safe='')}"


def airflow(api: ApiServer, method: str, path: str, body: Any = None, *, user: str = "admin") -> Any:
    """Airflow's own REST API (/api/v2/dags/...) as `user`."""
    return api.airflow(method, path, body, token=token(api, user))


def trigger_as(api: ApiServer, user: str, dag_id: str, run_id: str, conf: dict[str, Any]) -> dict[str, Any]:
    """A run created by `user` through Airflow's REST API, with the id and conf they chose."""
    body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
    return airflow(api, "POST", f"{dag_id}/dagRuns", body, user=user)


class TaskInstance(SimpleNamespace):
    """The parts of the task runner's task instance claim_task uses; run counts and task
    states come from Airflow's REST API, as the runner's come from its execution API."""

    def __init__(self, api: ApiServer, dag_id: str, run_id: str, task_id: str) -> None:
        super().__init__(dag_id=dag_id, run_id=run_id, task_id=task_id, try_number=1, max_tries=0)
        self._api = api

    def get_dr_count(self, dag_id: str, run_ids: list[str], states: list[str]) -> int:
        count = 0
        for run_id in run_ids:
            try:
                count += airflow(self._api, "GET", run_path(dag_id, run_id))["state"] in states
            except urllib.error.HTTPError as err:  # a run Airflow does not know counts as none
                if err.code != 404:
                    raise
        return count

    def get_task_states(self, dag_id: str, run_ids: list[str]) -> dict[str, dict[str, str | None]]:
        return {
            run_id: {
                ti["task_id"]: ti["state"]
                for ti in airflow(self._api, "GET", f"{run_path(dag_id, run_id)}/taskInstances")[
                    "task_instances"
                ]
            }
            for run_id in run_ids
        }


def server_of(dag_id: str) -> str:
    return "local" if dag_id == MAIN else "gpu2"


def context(api: ApiServer, dag_id: str, run_id: str, task_id: str = CLAIM_TASK_ID) -> dict[str, Any]:
    """The task context of Airflow's run (dag_id, run_id) as Airflow has it: the DAG's params
    with the run's conf over them, the run's dates."""
    run = airflow(api, "GET", run_path(dag_id, run_id))
    conf = run["conf"] or {}
    params = {name: schema.get("default") for name, schema in param_schemas(server_of(dag_id)).items()}
    params.update(conf)

    def when(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    dag_run = SimpleNamespace(
        dag_id=dag_id,
        run_id=run_id,
        conf=conf,
        run_type=run["run_type"],
        start_date=when(run.get("start_date")),
        run_after=when(run.get("run_after")),
    )
    return {"dag_run": dag_run, "params": params, "ti": TaskInstance(api, dag_id, run_id, task_id)}


def claim(api: ApiServer, dag_id: str, run_id: str) -> int:
    return ClaimTaskOperator(task_id=CLAIM_TASK_ID).execute(context(api, dag_id, run_id))


def refused_claim(api: ApiServer, dag_id: str, run_id: str) -> str:
    with pytest.raises(AirflowFailException) as refused:
        claim(api, dag_id, run_id)
    return str(refused.value)


def state_of(store: WorkflowStore, task_id: int) -> tuple[Any, ...]:
    """All of a task an attack might change: its row, its steps, its log."""
    task = store.get_task(task_id)
    steps = [(s["step_name"], s["status"], s["error_message"]) for s in task.pop("steps")]
    task.pop("updated_at")
    return json.dumps(task, default=str, sort_keys=True), steps, store.logs_after(task_id)


def settled(check: Callable[[], bool], timeout: float = 60) -> bool:
    """Whether `check` holds within `timeout` s: the listener's work runs in a thread of the API
    server, after the request that set it off has answered."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def upload_status(store: WorkflowStore, task_id: int) -> str:
    return str(store.get_task(task_id)["steps"][1]["status"])


@pytest.fixture
def task_a(stack: ApiServer) -> Iterator[tuple[int, str]]:
    """A's task, created through the API by alice, with data_upload running (so the
    handling of a failed run that took it for its own would fail that step): (task id, its run id)."""
    status, created = call(stack, "POST", "/tasks", BODY_A, user="alice")
    assert status == 201, created
    task_id = created["task_id"]
    store = stack.store
    store.start_step(task_id, "data_fetch")
    store.complete_step(task_id, "data_fetch")
    store.start_step(task_id, "data_upload")
    task = store.get_task(task_id, with_steps=False)
    assert task["dag_id"] == MAIN and task["dag_run_id"].startswith(f"workflow_task_{task_id}__")
    yield task_id, task["dag_run_id"]
    call(stack, "POST", f"/tasks/{task_id}/cancel")


def test_a_run_of_bs_dag_named_after_as_run_gets_a_task_of_its_own(
    stack: ApiServer, task_a: tuple[int, str]
) -> None:
    """bob names his run on B's DAG after A's run: it works for a new task of B's server with
    bob's fields, never A's task (whose SQL would show in bob's run's logs)."""
    task_id, run_a = task_a
    before = state_of(stack.store, task_id)
    trigger_as(stack, "bob", OTHER, run_a, FIELDS_B)
    own = claim(stack, OTHER, run_a)
    assert own != task_id
    mine = stack.store.get_task(own, with_steps=False)
    assert (mine["dag_id"], mine["server"], mine["sample_sql"]) == (OTHER, "gpu2", FIELDS_B["sample_sql"])
    assert state_of(stack.store, task_id) == before
    # a listing by run id shows bob his own task only
    listed = call(stack, "GET", f"/tasks?dag_run_id={quote(run_a)}", user="bob")[1]
    assert [t["id"] for t in listed] == [own] and SECRET not in json.dumps(listed)
    both = call(stack, "GET", f"/tasks?dag_run_id={quote(run_a)}")[1]
    assert [t["id"] for t in both] == [task_id, own]
    for dag_id, expected in [(MAIN, task_id), (OTHER, own)]:
        listed = call(stack, "GET", f"/tasks?dag_run_id={quote(run_a)}&dag_id={dag_id}")[1]
        assert [t["id"] for t in listed] == [expected]


def test_a_conf_task_id_adopts_no_task_the_api_did_not_start_the_run_for(
    stack: ApiServer, task_a: tuple[int, str]
) -> None:
    """A conf naming A's task, whose run has ended (so no "active run" check stands in the
    way): refused (naming task_id, not showing A's SQL) in bob's run on B's DAG, with A's run
    id or another, in alice's own run on A's DAG, and in a stage of bob's run; likewise for a
    task id that does not exist, in the same words."""
    task_id, run_a = task_a
    airflow(stack, "PATCH", run_path(MAIN, run_a), {"state": "failed"})
    assert settled(lambda: upload_status(stack.store, task_id) == "failed")  # the run-failed listener
    before = state_of(stack.store, task_id)
    attempts = [
        ("bob", OTHER, run_a),
        ("bob", OTHER, f"manual__b_{task_id}"),
        ("alice", MAIN, f"manual__a_{task_id}"),
    ]
    for user, dag_id, run_id in attempts:
        trigger_as(stack, user, dag_id, run_id, {"task_id": task_id})
        message = refused_claim(stack, dag_id, run_id)
        assert message.startswith(f"task_id: workflow task {task_id} was not started by this DAG run"), (
            message
        )
        assert SECRET not in message
    with pytest.raises(AirflowFailException, match=f"^task_id: workflow task {task_id} was not started"):
        HiveExportOperator(task_id="hive_export").execute(
            context(stack, OTHER, run_a, "data_fetch.hive_export")
        )
    unknown = 999_999
    trigger_as(stack, "bob", OTHER, f"manual__unknown_{task_id}", {"task_id": unknown})
    message = refused_claim(stack, OTHER, f"manual__unknown_{task_id}")
    assert message.startswith(f"task_id: workflow task {unknown} was not started by this DAG run"), message
    assert state_of(stack.store, task_id) == before
    # the control: A's own run, which the API recorded for the task, works for it
    assert claim(stack, MAIN, run_a) == task_id


def test_a_failed_run_named_after_as_run_leaves_a_alone(stack: ApiServer, task_a: tuple[int, str]) -> None:
    """bob's run on B's DAG with A's run id and an unknown task_id fails at claim_task and is
    marked failed: what the workflow does for a failed run must not fail A's running step, nor
    write to A's log (with train running it would also stop A's job: tests/test_airflow_stops.py
    has that case over a real sshd). A's own run, marked failed, has its step failed by the
    plugin's listener in the real API server: it was the run's identity that kept A safe.
    For the run that must change nothing, the listener's work (run_failed) also runs in this
    process, so the check comes after it has ended; it reads the runs over Airflow's REST API."""

    def states_over_rest(dag_id: str, run_id: str) -> tuple[str | None, list[str | None]]:
        tis = airflow(stack, "GET", f"{run_path(dag_id, run_id)}/taskInstances")["task_instances"]
        return airflow(stack, "GET", run_path(dag_id, run_id))["state"], [ti["state"] for ti in tis]

    task_id, run_a = task_a
    before = state_of(stack.store, task_id)
    trigger_as(stack, "bob", OTHER, run_a, {"task_id": 999_999})
    refused_claim(stack, OTHER, run_a)
    airflow(stack, "PATCH", run_path(OTHER, run_a), {"state": "failed"})
    airflow_stops.run_failed(get_config(), get_logger(), OTHER, run_a, read_states=states_over_rest)
    assert state_of(stack.store, task_id) == before
    airflow(stack, "PATCH", run_path(MAIN, run_a), {"state": "failed"})

    assert settled(lambda: upload_status(stack.store, task_id) != "running")
    upload = stack.store.get_task(task_id)["steps"][1]
    assert upload["status"] == "failed" and f"the DAG run {run_a} failed" in upload["error_message"]


def test_a_run_marked_success_completes_only_its_own_task(stack: ApiServer, task_a: tuple[int, str]) -> None:
    """Marks in Airflow, followed by the listener in the real API server: a stage marked success
    is skipped with the mark as its reason, and a run marked success ends its task completed,
    the stages that did not finish skipped. bob's run on B's DAG, named after A's run, marked
    success completes bob's task only; A's own run, marked success, completes A."""
    task_id, run_a = task_a
    before = state_of(stack.store, task_id)
    trigger_as(stack, "bob", OTHER, run_a, FIELDS_B)
    bobs = claim(stack, OTHER, run_a)
    airflow(stack, "PATCH", run_path(OTHER, run_a), {"state": "success"})

    def completed(task: int) -> bool:
        return settled(lambda: stack.store.get_task(task, with_steps=False)["status"] == "completed")

    assert completed(bobs)
    assert state_of(stack.store, task_id) == before
    # A's running stage marked success: skipped, and the task runs on
    airflow(stack, "PATCH", f"{run_path(MAIN, run_a)}/taskInstances/data_upload", {"new_state": "success"})
    assert settled(lambda: upload_status(stack.store, task_id) == "skipped")
    assert stack.store.get_task(task_id, with_steps=False)["status"] == "running"
    airflow(stack, "PATCH", run_path(MAIN, run_a), {"state": "success"})
    assert completed(task_id)
    marked = f"the DAG run {run_a} was marked success in Airflow"
    assert [(s["status"], s["error_message"]) for s in stack.store.get_task(task_id)["steps"]] == [
        ("completed", None),
        ("skipped", "data_upload was marked success in Airflow before it finished"),
        *[("skipped", f"{marked} before it ran")] * 4,
    ]


def test_cancel_stops_only_the_tasks_own_run(stack: ApiServer, task_a: tuple[int, str]) -> None:
    """Cancelling A fails A's run in A's DAG; bob's run with the same id in B's DAG goes on."""
    task_id, run_a = task_a
    trigger_as(stack, "bob", OTHER, run_a, FIELDS_B)
    assert call(stack, "POST", f"/tasks/{task_id}/cancel", user="alice")[0] == 200
    assert airflow(stack, "GET", run_path(MAIN, run_a))["state"] == "failed"
    assert airflow(stack, "GET", run_path(OTHER, run_a))["state"] == "queued"


def test_squatted_run_ids_neither_block_nor_capture_api_tasks(stack: ApiServer) -> None:
    """alice pre-creates runs on A's DAG with the ids the next tasks used to get
    (`workflow_task_<n>`, `..._retry_1`): the next task still starts, in a run of its own,
    the squatted runs do not work for it, and a retry that needs a new run picks a fresh id."""
    start = (newest_task_id(stack.store) or 0) + 1
    squatted = {f"workflow_task_{n}{s}" for n in range(start, start + 3) for s in ("", "_retry_1")}
    for run_id in squatted:
        trigger_as(stack, "alice", MAIN, run_id, {})
    status, created = call(stack, "POST", "/tasks", BODY_A, user="alice")
    assert status == 201, created
    task_id = created["task_id"]
    assert task_id in range(start, start + 3)
    run_id = stack.store.get_task(task_id, with_steps=False)["dag_run_id"]
    assert (
        run_id not in squatted and airflow(stack, "GET", run_path(MAIN, run_id))["conf"]["task_id"] == task_id
    )
    # the squatted run named after the task, given its task_id, does not work for it
    trigger_as(stack, "alice", MAIN, f"workflow_task_{task_id}_x", {"task_id": task_id})
    assert "was not started by this DAG run" in refused_claim(stack, MAIN, f"workflow_task_{task_id}_x")
    # the task's run is gone from Airflow: a retry starts a new run, under a fresh id
    stack.store.fail_task(task_id, "failed for the test")
    airflow(stack, "DELETE", run_path(MAIN, run_id))
    assert call(stack, "POST", f"/tasks/{task_id}/retry", user="alice")[0] == 200
    retried = stack.store.get_task(task_id, with_steps=False)
    assert retried["dag_run_id"].startswith(f"workflow_task_{task_id}_retry_1__")
    assert retried["dag_run_id"] not in squatted
    assert airflow(stack, "GET", run_path(MAIN, retried["dag_run_id"]))["state"] == "queued"
    call(stack, "POST", f"/tasks/{task_id}/cancel")


# Starts a stored task's run the way POST /tasks does (api/tasks._start_run: Airflow's own trigger
# route on the stack's metadata DB), with the first run ids it picks given on the command line
# instead of random ones, so that a collision happens on purpose. Prints the route's status.
START_WITH_IDS = r"""
import json, sys
from fastapi import HTTPException
from starlette.requests import Request
from fuxictr_workflow.api import tasks, trigger
from fuxictr_workflow.api.airflow_api import AirflowApi
from fuxictr_workflow.store import get_store

port, bearer, task_id, picked = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), iter(sys.argv[4:])
fresh = trigger.run_id_for
trigger.run_id_for = lambda task, attempt=0: next(picked, None) or fresh(task, attempt)
# alice's request to the plugin, as the API server received it
request = Request({
    "type": "http", "method": "POST", "path": "/api/workflow/tasks", "server": ("127.0.0.1", port),
    "headers": [(b"authorization", f"Bearer {bearer}".encode())],
})
try:
    tasks._start_run(get_store(), task_id, 0, AirflowApi(request))
    print(json.dumps({"status": 201}))
except HTTPException as err:
    print(json.dumps({"status": err.status_code, "detail": err.detail}))
"""


def start_with_ids(api: ApiServer, task_id: int, run_ids: list[str]) -> dict[str, Any]:
    """alice starts the task, its first run ids being `run_ids`."""
    args = [str(api.port), token(api, "alice"), str(task_id), *run_ids]
    done = subprocess.run(
        [sys.executable, "-c", START_WITH_IDS, *args],
        env=api.env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_taken_run_id_is_replaced_by_a_fresh_one_and_never_adopted(stack: ApiServer) -> None:
    """The ids a start picks are random, so a collision is made here on purpose: alice's runs
    hold the first ids the start picks. Two taken: the third try starts the task in a run of its
    own, and the squatted runs stay as they were. Every try taken: the task fails with the
    reason, bound to no run (a retry starts afresh), and nothing in Airflow carries its id."""
    fields = {**BODY_A, "server": "local"}
    task_id = stack.store.create_task(**fields)
    squatted = [f"squat_{task_id}_{n}" for n in range(3)]
    for run_id in squatted:
        trigger_as(stack, "alice", MAIN, run_id, {})
    assert start_with_ids(stack, task_id, squatted[:2]) == {"status": 201}
    run_id = stack.store.get_task(task_id, with_steps=False)["dag_run_id"]
    assert run_id.startswith(f"workflow_task_{task_id}__"), run_id
    run = airflow(stack, "GET", run_path(MAIN, run_id))
    assert (run["conf"]["task_id"], run["triggering_user_name"]) == (task_id, "alice"), run
    assert [airflow(stack, "GET", run_path(MAIN, r))["conf"] for r in squatted] == [{}, {}, {}]
    airflow(stack, "DELETE", run_path(MAIN, run_id))

    second = stack.store.create_task(**fields)
    reply = start_with_ids(stack, second, squatted)
    assert reply["status"] == 503 and f"has a run {squatted[2]}" in reply["detail"], reply
    task = stack.store.get_task(second, with_steps=False)
    assert (task["status"], task["dag_run_id"]) == ("failed", None), task
    assert f"has a run {squatted[2]}" in task["error_message"]
    assert [airflow(stack, "GET", run_path(MAIN, r))["conf"] for r in squatted] == [{}, {}, {}]


def test_a_run_merely_named_like_tasks_tests_run_is_not_parked(stack: ApiServer) -> None:
    """bob names his run like the one `airflow tasks test` makes: claim_task does not park it
    (for a day, holding one of max_active_runs); it runs as any run with its fields does."""
    run_id = "__airflow_temporary_run_2026-01-01T00:00:00.000000+00:00__"
    trigger_as(stack, "bob", OTHER, run_id, FIELDS_B)
    try:
        own = claim(stack, OTHER, run_id)
    except AirflowRescheduleException as parked:
        pytest.fail(f"claim_task parked a run by its name until {parked.reschedule_date}")
    task = stack.store.get_task(own, with_steps=False)
    assert (task["dag_id"], task["dag_run_id"], task["server"]) == (OTHER, run_id, "gpu2")
