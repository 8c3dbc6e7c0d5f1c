"""The ways in besides the plugin's API, on the e2e stack with its scheduler running:
Airflow's own REST trigger with conf (what the UI's trigger form sends), and `airflow tasks
test` of one stage, for each of the DAG's eight stage tasks, naming an existing task or
giving the six fields.

The package's stack (tests/e2e/conftest.py) serves the module; the tests run in file order
(the REST-triggered task is the existing task the single-stage re-runs work on).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from fuxictr_workflow.domain import paths
from fuxictr_workflow.domain.stages import STAGE_NAMES
from fuxictr_workflow.orchestration.dag_params import GATE_TASK
from scripts import airflow_stack, demo
from tests.dag_tasks import STAGE_TASKS
from tests.e2e.launch import Launched, fields, trigger
from tests.e2e.stack import INFER_ROWS, Stack
from tests.e2e.stage_alone import TASKS_TEST_RUN_PREFIX, run_alone

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DAG = "fuxictr_workflow"
TRACEBACK = "Traceback (most recent call last)"
# what `airflow tasks test` printed when the scheduler moved the stage under test's state
# the first part of a two-part stage: alone, it leaves its stage pending for the second part
FIRST_PARTS = ("data_fetch.hive_export", "hive_upload.hdfs_upload")
# the stage tasks run through `airflow tasks test` itself, the others in-process (stage_alone.py),
# each CLI start costing about 20 s of CPU: with the six fields, the export (a Hive stage that
# works from scratch) and train side by side, each with its own logical date; on an existing
# task, README's example (train, its job followed in the foreground)
CLI_TASKS = ("data_fetch.hive_export", "train")
CLI_TASKS_ON_A_TASK = ("train",)
CRASH_MARKERS = ("ServerResponseError", "TI may be stuck", "[DAG TEST] Error running task")


def api(stack: Stack, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """The plugin's or Airflow's REST API, patient with a machine busy running stages."""
    return demo.api(stack.port, stack.token, method, path, body, timeout=180)


def airflow_run(stack: Stack, run_id: str) -> dict[str, Any]:
    return api(stack, "GET", f"/api/v2/dags/{DAG}/dagRuns/{run_id}")


def run_states(stack: Stack) -> dict[str, str]:
    runs = api(stack, "GET", f"/api/v2/dags/{DAG}/dagRuns?limit=100")["dag_runs"]
    return {r["dag_run_id"]: r["state"] for r in runs}


def tasks_test(
    stack: Stack,
    task: str,
    params: dict[str, Any],
    *,
    fails: bool | None = False,
    logical_date: str | None = None,
) -> str:
    """`airflow tasks test fuxictr_workflow TASK [LOGICAL_DATE] -t PARAMS`, as README "One stage
    alone" shows (a logical date lets several run at once, docs/architecture.md).

    The output has no traceback, or (``fails``; either when None) only Airflow's report of the
    stage's own failure (AirflowFailException with the reason the step records)."""
    airflow = str(airflow_stack.VENV_BIN / "airflow")
    out = subprocess.run(
        [airflow, "tasks", "test", DAG, task, *([logical_date] if logical_date else []), "-t", json.dumps(params)],
        env=stack.services.env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode == 0, f"{task}: exit {out.returncode}\n{text[-4000:]}"
    crashes = [m for m in CRASH_MARKERS if m in text]
    assert not crashes, f"{task}: {crashes} in the output\n{text[-6000:]}"
    if fails is None:
        fails = TRACEBACK in text
    if fails:
        assert text.count(TRACEBACK) == 1 and "AirflowFailException: " in text, text[-6000:]
    else:
        assert TRACEBACK not in text, f"{task}: a traceback in the output\n{text[-6000:]}"
    return text


def assert_consistent(task: dict[str, Any]) -> None:
    """The task's status is what its steps say: nothing left running once a run has ended."""
    steps = {s["step_name"]: s for s in task["steps"]}
    failed = [s for s in task["steps"] if s["status"] == "failed"]
    assert all(s["status"] != "running" for s in task["steps"]), steps
    if failed:
        first = STAGE_NAMES.index(failed[0]["step_name"])
        assert (task["status"], task["current_step"]) == ("failed", first), task
        assert task["error_message"].startswith(f"{failed[0]['step_name']} failed: ")
    elif all(s["status"] == "completed" for s in task["steps"]):
        assert (task["status"], task["current_step"]) == ("completed", 5), task
    else:
        unfinished = next(i for i, s in enumerate(task["steps"]) if s["status"] != "completed")
        assert (task["status"], task["current_step"]) == ("pending", unfinished), task


def wait_task_of_run(stack: Stack, run_id: str, timeout: float = 600) -> int:
    stack.store.init()  # a REST-triggered run is the first to use the store: no tables yet
    stack.wait_until(
        f"a task for run {run_id}", lambda: stack.store.find_task_by_run(DAG, run_id) is not None, timeout, 1
    )
    return int(stack.store.find_task_by_run(DAG, run_id) or 0)


@pytest.fixture(scope="module")
def triggered(stack: Stack, launched: Launched) -> dict[str, Any]:
    """The pipeline run triggered through Airflow's REST API when the package started, and its
    task once completed."""
    task_id = wait_task_of_run(stack, launched.rest_run)
    return {"run_id": launched.rest_run, "task": stack.assert_completed(task_id)}


def test_rest_trigger_runs_to_the_end_as_a_task(stack: Stack, triggered: dict[str, Any]) -> None:
    task_id = triggered["task"]["id"]
    query = urllib.parse.urlencode({"dag_run_id": triggered["run_id"]})  # run ids hold '+' and ':'
    listed = api(stack, "GET", f"/api/workflow/tasks?{query}")
    assert [(t["id"], t["name"], t["status"]) for t in listed] == [(task_id, "rest-trigger", "completed")]
    detail = api(stack, "GET", f"/api/workflow/tasks/{task_id}")
    assert [s["status"] for s in detail["steps"]] == ["completed"] * 6
    # the run itself ends a moment after its last stage has recorded the task completed
    ended = ("success", "failed")
    stack.wait_until(
        "the run to end", lambda: airflow_run(stack, triggered["run_id"])["state"] in ended, 300, 1
    )
    assert airflow_run(stack, triggered["run_id"])["state"] == "success"


@pytest.mark.parametrize(
    ("field", "value"),
    [("hive_table", "not a table"), ("experiment_id", "../etc"), ("name", "   "), ("task_id", 0)],
)
def test_rest_trigger_refuses_an_invalid_field(stack: Stack, field: str, value: Any) -> None:
    from airflow_client.client.exceptions import ApiException

    before = set(run_states(stack))
    with pytest.raises(ApiException) as refused:
        trigger(stack, {**fields(stack, "invalid"), field: value})
    assert refused.value.status == 400
    assert f"param {field}" in str(refused.value.body)
    assert set(run_states(stack)) == before


def test_trigger_naming_a_task_with_an_active_run_is_refused(stack: Stack) -> None:
    """Issue 13 part 6, issue 29: a plain trigger whose conf names a task_id (here one with an
    active run) fails at its first task, naming task_id: the API did not start that run for the
    task. The task and its run are left alone."""
    task_id = stack.submit("active")
    owner = stack.store.get_task(task_id, with_steps=False)["dag_run_id"]
    second = trigger(stack, {"task_id": task_id})["dag_run_id"]
    stack.wait_until(
        "the second run to end", lambda: run_states(stack)[second] in ("success", "failed"), every=1
    )
    assert run_states(stack)[second] == "failed"
    tis = api(stack, "GET", f"/api/v2/dags/{DAG}/dagRuns/{second}/taskInstances")
    states = {ti["task_id"]: ti["state"] for ti in tis["task_instances"]}
    assert states.pop("claim_task") == "failed" and set(states.values()) == {"upstream_failed"}
    log = api(stack, "GET", f"/api/v2/dags/{DAG}/dagRuns/{second}/taskInstances/claim_task/logs/1")
    assert (
        f"task_id: workflow task {task_id} was not started by this DAG run ({DAG}, {second})"
        in json.dumps(log)
    )
    task = stack.store.get_task(task_id)
    assert task["dag_run_id"] == owner and task["status"] in ("pending", "running")
    assert run_states(stack)[owner] in ("queued", "running")
    api(stack, "POST", f"/api/workflow/tasks/{task_id}/cancel")


def stage_alone(
    stack: Stack, airflow_task: str, params: dict[str, Any], cli: tuple[str, ...], index: int = 0
) -> str | None:
    """One stage task alone: `airflow tasks test` for the `cli` tasks (with its own logical date
    when `index` is given), the rest in-process (stage_alone.py). Returns the failure the
    stage reported (AirflowFailException's message), None when it did not fail; under the CLI
    that failure must be the output's one traceback."""
    from airflow.sdk.exceptions import AirflowFailException

    if airflow_task in cli:
        date = datetime(2030, 1, 1 + index, tzinfo=UTC).isoformat() if index else None
        output = tasks_test(stack, airflow_task, params, fails=None, logical_date=date)
        failed = TRACEBACK in output
        return output.split("AirflowFailException: ", 1)[1] if failed else None
    try:
        run_alone(stack, airflow_task, params)
    except AirflowFailException as err:
        return str(err)
    return None


def test_each_stage_alone_on_an_existing_task(stack: Stack, triggered: dict[str, Any]) -> None:
    """Each stage task alone on a completed task (`-t '{"task_id": N}'`), with the scheduler
    running: the stage re-runs, no other stage is touched, and the task ends completed again
    (pending between the two parts of a two-part stage); under the CLI, no traceback.

    Each stage runs as on a worker that never saw the task (its staging dir emptied first):
    what a stage needs from the one before comes from HDFS, never from a worker's disk."""
    task_id = triggered["task"]["id"]
    staging = paths.staging_task_dir(stack.config().storage.staging_dir, task_id)
    for airflow_task in STAGE_TASKS:
        shutil.rmtree(staging, ignore_errors=True)
        stage = airflow_task.split(".")[0]
        before = stack.store.get_task(task_id)
        assert stage_alone(stack, airflow_task, {"task_id": task_id}, CLI_TASKS_ON_A_TASK) is None, (
            airflow_task
        )
        after = stack.store.get_task(task_id)
        assert_consistent(after)
        changed = {b["step_name"] for b, a in zip(before["steps"], after["steps"], strict=True) if a != b}
        assert changed == {stage}, f"{airflow_task} changed steps {changed}"
        step = after["steps"][STAGE_NAMES.index(stage)]
        if airflow_task in FIRST_PARTS:
            assert step["status"] == "pending" and after["status"] == "pending"
        else:
            assert step["status"] == "completed" and after["status"] == "completed", after
            assert step["started_at"] > before["steps"][STAGE_NAMES.index(stage)]["started_at"]
    assert stack.hive_rows(task_id) == INFER_ROWS
    states = run_states(stack)
    assert states[triggered["run_id"]] == "success", "the task's own DAG run was changed"
    assert not [r for r in states if r.startswith(TASKS_TEST_RUN_PREFIX)], states


def test_each_stage_alone_with_the_six_fields(stack: Stack) -> None:
    """Each stage task alone with `-t '{six fields}'` creates a task for the one stage: only that
    stage's step moved and the task's status is what its steps say. The export (data_fetch's
    first part) works from scratch; a later stage fails naming what is missing (a new task has
    no data from earlier stages). The CLI runs go side by side, each with its own logical date."""

    def one(index_task: tuple[int, str]) -> tuple[str, str | None]:
        index, airflow_task = index_task
        return airflow_task, stage_alone(
            stack, airflow_task, fields(stack, f"alone-{airflow_task}"), CLI_TASKS, index + 1
        )

    cli = [(i, t) for i, t in enumerate(STAGE_TASKS) if t in CLI_TASKS]
    with ThreadPoolExecutor(len(cli)) as pool:
        failures = dict(pool.map(one, cli))
    failures.update(one(it) for it in enumerate(STAGE_TASKS) if it[1] not in CLI_TASKS)
    for airflow_task, failure in failures.items():
        (row,) = [t for t in stack.store.list_tasks(limit=1000) if t["name"] == f"alone-{airflow_task}"]
        task = stack.store.get_task(row["id"])
        assert_consistent(task)
        stage = airflow_task.split(".")[0]
        others = [s for s in task["steps"] if s["step_name"] != stage]
        assert all(s["status"] == "pending" and s["started_at"] is None for s in others), task["steps"]
        step = task["steps"][STAGE_NAMES.index(stage)]
        if airflow_task == STAGE_TASKS[0]:
            assert failure is None
            assert step["status"] == "pending" and step["started_at"] is not None
        else:
            assert step["status"] == "failed" and step["error_message"], step
            assert failure is not None and failure.startswith(step["error_message"]), (failure, step)
    assert not [r for r in run_states(stack) if r.startswith(TASKS_TEST_RUN_PREFIX)]


def test_the_seed_readme_body_is_accepted_verbatim(stack: Stack) -> None:
    """The embedded default lists and creates `hive_db`, so README's own example body (copied
    as is, tests/test_embedded_default.py) is accepted rather than refused for its database."""
    from tests.test_embedded_default import SEED_README_BODY

    env = {k: v for k, v in stack.services.env.items() if k.startswith("AIRFLOW_CONN_")}
    (databases,) = demo.hive_run(["SHOW DATABASES LIKE 'hive_db'"], env)
    assert [str(r[0]) for r in databases] == ["hive_db"]
    created = api(stack, "POST", "/api/workflow/tasks", SEED_README_BODY)
    assert created["status"] == "pending"
    api(stack, "POST", f"/api/workflow/tasks/{created['task_id']}/cancel")  # its tables do not exist here


def test_every_dag_task_shows_its_stages_execution_timeout(stack: Stack) -> None:
    """What Airflow serves for the DAG's tasks (the UI's task details) carries the configured
    task.execution_timeout_s of each task's stage."""
    cfg = stack.config()
    served = api(stack, "GET", f"/api/v2/dags/{DAG}/tasks")["tasks"]
    seen = {t["task_id"]: t["execution_timeout"] for t in served}
    # the quality gate has none: its wait for a person is bounded by quality_gate.decision_timeout_h
    assert seen.pop(GATE_TASK) is None
    want = {"claim_task": cfg.task.execution_timeout("default")}
    want.update({t: cfg.task.execution_timeout(t.split(".")[0]) for t in STAGE_TASKS})
    assert {k: v["days"] * 86400 + v["seconds"] for k, v in seen.items()} == want


def test_an_export_over_the_size_cap_fails_data_upload_naming_cap_and_size(
    stack: Stack, triggered: dict[str, Any]
) -> None:
    """data_upload alone on the completed task under a config whose storage.max_export_bytes is
    below the export's size: the step fails before anything is copied, its error naming the cap
    and the size; run again without the cap, it completes (what was verified is not re-sent)."""
    import yaml

    task_id = triggered["task"]["id"]
    data = yaml.safe_load(stack.config_path.read_text())
    data.setdefault("storage", {})["max_export_bytes"] = 1000
    capped = stack.config_path.with_name("config-export-cap.yaml")
    capped.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        failure = stage_alone_with_config(stack, "data_upload", task_id, capped)
    finally:
        capped.unlink()
    step = stack.store.get_task(task_id)["steps"][STAGE_NAMES.index("data_upload")]
    assert step["status"] == "failed", step
    assert "bytes on HDFS" in step["error_message"]
    assert "over storage.max_export_bytes (1,000 bytes)" in step["error_message"]
    assert failure is not None and failure.startswith(step["error_message"])
    assert stage_alone_with_config(stack, "data_upload", task_id, None) is None
    assert_consistent(stack.store.get_task(task_id))
    assert stack.store.get_task(task_id)["status"] == "completed"


def stage_alone_with_config(stack: Stack, airflow_task: str, task_id: int, config: Any) -> str | None:
    from airflow.sdk.exceptions import AirflowFailException

    try:
        run_alone(stack, airflow_task, {"task_id": task_id}, config)
    except AirflowFailException as err:
        return str(err)
    return None
