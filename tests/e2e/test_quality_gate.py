"""The quality gate on the real stack: a clearly worse training waits, parked in Airflow's
awaiting_input state (no worker slot, no process), for a person's decision; Reject through
the workflow API ends the task with nothing in Hive, and after a retry Approve clicked in the
workflow view (headless Chromium, as the signed-in user) publishes it. Both answers reach
Airflow's own HITL route as the caller: Airflow records who answered, in its audit log too.

Both answers come within seconds of the hold, the window in which Airflow 3.3.2 can lose the
gate's resume (it fails the task instance as a "state mismatch"): the decision must stand
all the same, never be asked again.

The baseline is a task of the package's fault-free runs (the one triggered through Airflow's
REST API; the API task's may be cancelled by a fault test by now): the DeepFM_demo experiment
on the demo data, published. The worse training is the same experiment on the
same rows with random labels, written as an analyst would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fuxictr_workflow.orchestration.dag_params import GATE_TASK
from scripts import airflow_stack, demo
from tests.e2e.launch import DAG, Launched, fields
from tests.e2e.stack import INFER_ROWS, Stack
from tests.e2e.train_job import airflow_task_process, task_instance_path
from tests.services.browser import sign_in, waiter

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RANDOM_LABELS_SQL = """
SELECT id, c1, c2, c3, c4, n1, n2,
       CASE WHEN rand(7) < 0.25 THEN 1 ELSE 0 END AS label
FROM demo.ctr_sample
WHERE dt = '2024-01-01'
"""
GATE_ON = {"quality_gate": {"experiments": {"DeepFM_demo": {"enabled": True}}}}


def published_task(stack: Stack, launched: Launched) -> int:
    stack.wait_until(
        "a task for the REST-triggered run",
        lambda: stack.store.find_task_by_run(DAG, launched.rest_run) is not None,
        300,
        1,
    )
    return int(stack.store.find_task_by_run(DAG, launched.rest_run))


def workflow_task(stack: Stack, task_id: int) -> dict[str, Any]:
    return demo.api(stack.port, stack.token, "GET", f"/api/workflow/tasks/{task_id}")


def wait_status(stack: Stack, task_id: int, status: str, timeout: float = 900) -> dict[str, Any]:
    stack.wait_until(
        f"task {task_id} to be {status}",
        lambda: stack.store.get_task(task_id, with_steps=False)["status"] in (status, "failed", "cancelled"),
        timeout,
        1,
    )
    task = workflow_task(stack, task_id)
    assert task["status"] == status, f"task {task_id} is {task['status']}: {task['error_message']}"
    return task


def gate_ti(stack: Stack, task_id: int) -> dict[str, Any]:
    return demo.api(stack.port, stack.token, "GET", task_instance_path(stack, task_id, GATE_TASK))


def assert_held(stack: Stack, task_id: int, baseline: dict[str, Any]) -> dict[str, Any]:
    """Waiting, with both models' figures, parked in Airflow with no process, nothing in Hive."""
    task = wait_status(stack, task_id, "waiting")
    gate = task["quality_gate"]
    assert gate["decision"] == "waiting" and not task["stale"]
    assert gate["baseline_task_id"] is not None and gate["baseline_auc"] >= 0.7
    assert gate["auc"] < gate["baseline_auc"] - gate["max_auc_drop"], gate
    assert gate["answer"] == {
        "dag_id": task["dag_id"],
        "dag_run_id": task["dag_run_id"],
        "task_id": GATE_TASK,
        "map_index": -1,
    }
    published = stack.store.get_task(gate["baseline_task_id"], with_steps=False)
    assert published["status"] == "completed" and published["experiment_id"] == baseline["experiment_id"]
    stack.wait_until(
        "the gate to park", lambda: gate_ti(stack, task_id)["state"] == "awaiting_input", 120, 0.5
    )
    assert airflow_task_process(stack, task_id, GATE_TASK) is None, "a process holds the waiting gate"
    assert stack.hive_rows(task_id) == 0
    return gate


def airflow_hitl_answer(stack: Stack, gate: dict[str, Any]) -> tuple[list[str], str]:
    """What Airflow's HITL detail of the try that parked says, read with Airflow's official
    Python client: the chosen options and who answered."""
    from airflow_client.client import ApiClient, Configuration
    from airflow_client.client.api.task_instance_api import TaskInstanceApi

    answer = gate["answer"]
    config = Configuration(host=f"http://127.0.0.1:{stack.port}", access_token=stack.token)
    with ApiClient(config) as client:
        detail = TaskInstanceApi(client).get_hitl_detail(
            answer["dag_id"],
            answer["dag_run_id"],
            answer["task_id"],
            answer["map_index"],
            _request_timeout=60,
        )
    return list(
        detail.chosen_options or []
    ), detail.responded_by_user.name if detail.responded_by_user else ""


def approve_in_the_view(stack: Stack, browser: Any, task_id: int, artifacts: Path) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By

    sign_in(
        browser, f"http://127.0.0.1:{stack.port}", airflow_stack.admin_password(stack.services.airflow_home)
    )
    browser.get(f"http://127.0.0.1:{stack.port}/api/workflow/ui/#/tasks/{task_id}")
    try:
        approve = waiter(browser, 120).until(
            lambda d: next((b for b in d.find_elements(By.ID, "approve-btn") if b.is_displayed()), None)
        )
    except TimeoutException:
        browser.save_screenshot(str(artifacts / "quality-gate-no-approve.png"))
        notice = browser.find_element(By.ID, "notice").text
        task = workflow_task(stack, task_id)
        raise AssertionError(
            f"the view shows no Approve button; its notice: {notice!r}; the task is {task['status']} "
            f"with quality_gate {task['quality_gate']}"
        ) from None
    figures = {
        row.get_attribute("data-figure"): [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        for row in browser.find_elements(By.CSS_SELECTOR, "#gate-rows tr")
    }
    assert set(figures) == {"auc", "logloss"} and all(len(v) == 3 for v in figures.values()), figures
    browser.execute_script("document.getElementById('gate').scrollIntoView()")
    browser.save_screenshot(str(artifacts / "quality-gate.png"))
    approve.click()
    waiter(browser, 180).until(
        lambda d: "Approved" in d.find_element(By.ID, "notice").text, "the view never confirmed the approval"
    )


def test_a_worse_model_is_held_rejected_without_publishing_then_approved_in_the_view(
    stack: Stack, launched: Launched, browser: Any, ui_artifacts_dir: Path
) -> None:
    baseline = stack.assert_completed(published_task(stack, launched))
    with stack.config_changed(GATE_ON):
        body = {**fields(stack, "gate-worse"), "sample_sql": RANDOM_LABELS_SQL}
        task_id = int(demo.api(stack.port, stack.token, "POST", "/api/workflow/tasks", body)["task_id"])
        gate = assert_held(stack, task_id, baseline)

        # Reject, through the workflow API: Airflow takes the answer, nothing reaches Hive
        answered = demo.api(
            stack.port,
            stack.token,
            "POST",
            f"/api/workflow/tasks/{task_id}/quality-gate",
            {"decision": "reject"},
        )
        assert (answered["decision"], answered["decided_by"]) == ("rejected", airflow_stack.ADMIN)
        assert airflow_hitl_answer(stack, gate) == (["Reject"], airflow_stack.ADMIN)
        task = wait_status(stack, task_id, "rejected", 300)
        assert task["quality_gate"]["decision"] == "rejected"
        assert "rejected by admin at the quality gate" in task["error_message"]
        assert f"AUC {gate['auc']:.4f} vs {gate['baseline_auc']:.4f}" in task["error_message"]
        assert task["steps"][-1]["status"] == "skipped"
        stack.wait_until(
            "hive_upload's loading tasks to be skipped",
            lambda: all(
                demo.api(stack.port, stack.token, "GET", task_instance_path(stack, task_id, t))["state"]
                == "skipped"
                for t in ("hive_upload.hdfs_upload", "hive_upload.hive_load")
            ),
            120,
            1,
        )
        assert stack.hive_rows(task_id) == 0

        # a retry asks again (the same training, still worse); Approve in the workflow view publishes
        demo.api(stack.port, stack.token, "POST", f"/api/workflow/tasks/{task_id}/retry")
        assert_held(stack, task_id, baseline)
        approve_in_the_view(stack, browser, task_id, ui_artifacts_dir)
        done = stack.assert_completed(task_id)
    assert stack.hive_rows(task_id) == INFER_ROWS
    gate = workflow_task(stack, done["id"])["quality_gate"]
    assert (gate["decision"], gate["decided_by"]) == ("approved", airflow_stack.ADMIN)
    # Airflow's own audit log has both answers
    events = demo.api(
        stack.port,
        stack.token,
        "GET",
        f"/api/v2/eventLogs?dag_id={done['dag_id']}&task_id={GATE_TASK}&limit=100",
    )["event_logs"]
    answers = [e for e in events if e["run_id"] == done["dag_run_id"] and "hitl" in e["event"].lower()]
    assert len(answers) >= 2, [e["event"] for e in events]
