"""The workflow view in a real headless chromium, inside the real Airflow UI.

One real `airflow api-server` on 127.0.0.1 (own AIRFLOW_HOME, own port, SimpleAuthManager)
serves Airflow's UI and our plugin app; the browser logs in through Airflow's own login
page and uses the page exactly as a user would. Tasks are seeded through the workflow
store, and live log events are appended to it while the page is open. No scheduler runs:
a task created through the form gets its DAG run (checked through Airflow's REST API)
but the run is not executed here.

Screenshots go to .work/artifacts/ui/ (copied to docs/screenshots/ by hand).
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fuxictr_workflow.domain.stages import STAGE_NAMES, ChunkStatus
from fuxictr_workflow.store import ChunkSpec, WorkflowStore
from scripts import airflow_stack
from tests.conftest import newest_task_id
from tests.services.airflow_app import ApiServer, start_api_server
from tests.services.browser import sign_in, waiter

pytestmark = pytest.mark.timeout(420)


FAILED_ERROR = "ssh: connection to 127.0.0.1:2222 refused while sending chunk 3/4 (data_upload)"
NEW_TASK = {
    "name": "ui-created",
    "experiment_id": "demo_exp_ui",
    "sample_sql": "SELECT * FROM demo.sample WHERE dt = '2024-01-01'",
    "infer_sql": "SELECT * FROM demo.infer WHERE dt = '2024-01-02'",
    "hdfs_path": "/tmp/fuxictr_ui/hdfs",
    "hive_table": "demo.predictions",
}


@dataclass
class UiStack:
    """The shared api-server fixture's server plus the two tasks seeded for the views."""

    server: ApiServer
    completed_id: int
    failed_id: int

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def store(self) -> WorkflowStore:
        return self.server.store

    @property
    def password(self) -> str:
        return self.server.password(airflow_stack.ADMIN)

    def token(self) -> str:
        return self.server.token()


def seed(store: WorkflowStore) -> tuple[int, int]:
    """A completed task (with training metrics) and a task that failed in data_upload."""
    fields = {
        "experiment_id": "demo_exp",
        "sample_sql": "SELECT * FROM demo.sample",
        "infer_sql": "SELECT * FROM demo.infer",
        "hdfs_path": "/tmp/fuxictr_ui/hdfs",
        "hive_table": "demo.predictions",
    }
    done = store.create_task(name="daily-ctr-2024-01-01", **fields)
    for step in STAGE_NAMES:
        store.start_step(done, step)
        store.append_log(done, step, "INFO", f"{step} started")
        result = {"metrics": {"AUC": 0.7612, "logloss": 0.4877}} if step == "train" else {"seconds": 1.5}
        store.complete_step(done, step, result)
        store.append_log(done, step, "INFO", f"{step} completed")

    failed = store.create_task(name="daily-ctr-2024-01-02", **fields)
    store.start_step(failed, "data_fetch")
    store.append_log(failed, "data_fetch", "INFO", "exported sample and infer data to HDFS")
    store.complete_step(failed, "data_fetch", {"rows": 1000})
    store.start_step(failed, "data_upload")
    specs = [
        ChunkSpec(f"sample.parquet:{i}", "sample.parquet", i * 4_000_000, 4_000_000, "s:1") for i in range(4)
    ]
    store.register_chunks(failed, "data_upload", specs)
    for spec in specs[:2]:
        store.mark_chunk(failed, "data_upload", spec.chunk_id, ChunkStatus.VERIFIED, sent=True)
    store.append_log(failed, "data_upload", "WARNING", "chunk sample.parquet:2 failed, retrying (1/3)")
    store.append_log(failed, "data_upload", "ERROR", FAILED_ERROR)
    store.fail_step(failed, "data_upload", FAILED_ERROR)
    return done, failed


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiStack]:
    # the form creates tasks writing into database demo: the config must allow it
    server = start_api_server(tmp_path_factory.mktemp("ui_stack"), {"hive": {"output_databases": ["demo"]}})
    try:
        completed_id, failed_id = seed(server.store)
        yield UiStack(server, completed_id, failed_id)
    finally:
        airflow_stack.stop(server.home)
        server.store.dispose()


# ---------- browser helpers ----------


def login(driver: Any, stack: UiStack) -> None:
    sign_in(driver, stack.base_url, stack.password)


def text_of(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, css))


def log_messages(driver: Any) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#log-lines li')].map(li => li.lastChild.textContent)"
    )


def wait_for(driver: Any, predicate: Callable[[Any], Any], timeout: float = 30, message: str = "") -> Any:
    return waiter(driver, timeout).until(predicate, message)


# The create, cancel and retry requests act on DAG runs inside the API server: on a machine busy
# with other stacks that has taken over 30 s.
ACTION_TIMEOUT_S = 180


def wait_for_notice(driver: Any, text: str) -> None:
    """Until the page's notice says `text`; a timeout names what it said instead."""
    from selenium.common.exceptions import TimeoutException

    try:
        wait_for(driver, lambda d: text in text_of(d, "#notice"), ACTION_TIMEOUT_S)
    except TimeoutException:
        raise AssertionError(
            f"the notice never said {text!r}: it says {text_of(driver, '#notice')!r}"
        ) from None


def shot(driver: Any, artifacts: Path, name: str) -> None:
    driver.save_screenshot(str(artifacts / name))


# ---------- the user journey ----------


def test_workflow_view_in_airflow_ui(browser: Any, ui_stack: UiStack, ui_artifacts_dir: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    stack = ui_stack
    login(driver, stack)

    # the nav entry opens the page in an iframe of Airflow's UI
    nav = waiter(driver, 30).until(
        lambda d: d.find_elements(
            By.CSS_SELECTOR, "a[aria-label='FuXiCTR Workflow'], a[href$='/plugin/fuxictr-workflow']"
        )
    )
    nav[0].click()
    frame = waiter(driver, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "iframe[title='FuXiCTR Workflow']")
    )
    driver.switch_to.frame(frame[0])

    # the seeded tasks: newest first, the failed one with its error in red
    rows = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#task-rows tr"), message="task rows")
    ids = [int(r.get_attribute("data-task-id")) for r in rows]
    assert ids == sorted(ids, reverse=True)
    assert {stack.completed_id, stack.failed_id} <= set(ids)
    done_row = driver.find_element(By.CSS_SELECTOR, f"tr[data-task-id='{stack.completed_id}']")
    failed_row = driver.find_element(By.CSS_SELECTOR, f"tr[data-task-id='{stack.failed_id}']")
    assert done_row.find_element(By.CSS_SELECTOR, ".badge").text == "completed"
    assert len(done_row.find_elements(By.CSS_SELECTOR, ".progress span.completed")) == 6
    assert failed_row.find_element(By.CSS_SELECTOR, ".badge").text == "failed"
    error = failed_row.find_element(By.CSS_SELECTOR, ".row-error")
    # the task's error names the stage that failed it
    assert error.is_displayed() and error.text == f"data_upload failed: {FAILED_ERROR}"
    assert error.value_of_css_property("color") == "rgba(198, 40, 40, 1)"
    assert "2/6 data_upload" in failed_row.text
    shot(driver, ui_artifacts_dir, "list.png")

    # filter by status
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "status-filter")).select_by_value("failed")
    wait_for(
        driver,
        lambda d: (
            [r.get_attribute("data-task-id") for r in d.find_elements(By.CSS_SELECTOR, "#task-rows tr")]
            == [str(stack.failed_id)]
        ),
        message="status filter",
    )
    Select(driver.find_element(By.ID, "status-filter")).select_by_value("")

    # the completed task shows its training metrics
    driver.execute_script(f"location.hash = '#/tasks/{stack.completed_id}'")
    wait_for(driver, lambda d: "AUC" in text_of(d, "#metrics") and "0.7612" in text_of(d, "#metrics"))
    assert "0.4877" in text_of(driver, "#metrics")

    # open the failed task: steps, red error, transfer progress, its past log lines
    driver.execute_script("location.hash = '#/'")
    # find and click in one wait step: the list may re-render in between (stale element)
    wait_for(
        driver,
        lambda d: (
            d.find_element(By.CSS_SELECTOR, f"tr[data-task-id='{stack.failed_id}'] .task-link").click()
            is None
        ),
        message="open the failed task",
    )
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#step-rows tr")) == 6, message="steps")

    def failed_step_shown(d: Any) -> bool:
        # read in one go inside the wait: the detail view re-renders its rows while polling
        step = d.find_element(By.CSS_SELECTOR, "#step-rows tr[data-step='data_upload']")
        step_error = step.find_element(By.CSS_SELECTOR, ".step-error")
        fetch = d.find_element(By.CSS_SELECTOR, "#step-rows tr[data-step='data_fetch'] .badge")
        return (
            step.find_element(By.CSS_SELECTOR, ".badge").text == "failed"
            and step_error.text == FAILED_ERROR
            and step_error.is_displayed()
            and "chunks 2/4 verified" in step.text
            and fetch.text == "completed"
        )

    wait_for(driver, failed_step_shown, message="the failed step with its red error and transfer progress")
    assert driver.find_element(By.ID, "retry-btn").is_displayed()
    wait_for(driver, lambda d: FAILED_ERROR in log_messages(d), message="replayed log lines")
    error_line = driver.find_element(By.CSS_SELECTOR, "#log-lines li.ERROR")
    assert FAILED_ERROR in error_line.text
    assert driver.find_elements(By.CSS_SELECTOR, "#log-lines li.WARNING")
    shot(driver, ui_artifacts_dir, "detail.png")

    # create a task through the form: it is stored and gets a DAG run in Airflow
    driver.find_element(By.ID, "new-task-btn").click()
    for field, value in NEW_TASK.items():
        driver.find_element(By.ID, f"f-{field}").send_keys(value)
    driver.find_element(By.ID, "create-submit").click()
    new_id = wait_for(
        driver,
        lambda d: (
            (m := d.execute_script("return (location.hash.match(/^#\\/tasks\\/(\\d+)/) || [])[1]"))
            and int(m) not in (stack.failed_id, stack.completed_id)
            and int(m)
        ),
        ACTION_TIMEOUT_S,
        "navigated to the new task",
    )
    task = stack.store.get_task(new_id)
    assert task["name"] == NEW_TASK["name"] and task["dag_run_id"]
    wait_for(driver, lambda d: task["dag_run_id"] in text_of(d, "#task-fields"), message="dag run shown")
    runs = api_get(stack, f"/api/v2/dags/fuxictr_workflow/dagRuns/{urllib.request.quote(task['dag_run_id'])}")
    assert runs["dag_run_id"] == task["dag_run_id"]

    # live log lines arrive while the page is open
    wait_for(driver, lambda d: "live" in text_of(d, "#ws-state"), message="socket open")
    sent = []
    for i, level in enumerate(["INFO", "INFO", "WARNING", "ERROR", "INFO"]):
        message = f"live event {i} ({level.lower()})"
        stack.store.append_log(new_id, "data_fetch", level, message)
        sent.append(message)
        wait_for(driver, lambda d, m=message: m in log_messages(d), message=f"live line {i}")
    assert driver.find_elements(By.CSS_SELECTOR, "#log-lines li.ERROR")
    shot(driver, ui_artifacts_dir, "logs.png")

    # a dropped socket reconnects and resumes without duplicating or losing a line
    driver.execute_script("state.log.ws.close(4000, 'test drop')")
    stack.store.append_log(new_id, "data_fetch", "INFO", "after the drop")
    sent.append("after the drop")
    wait_for(driver, lambda d: "after the drop" in log_messages(d), 60, "line after reconnect")
    assert [m for m in log_messages(driver) if m in sent or m.startswith("live event")] == sent

    # level and step filters hide lines without dropping them
    Select(driver.find_element(By.ID, "level-filter")).select_by_value("ERROR")
    visible = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#log-lines li") if li.is_displayed()]
    assert visible and all("ERROR" in t for t in visible)
    Select(driver.find_element(By.ID, "level-filter")).select_by_value("INFO")
    Select(driver.find_element(By.ID, "step-filter")).select_by_value("train")
    assert not [li for li in driver.find_elements(By.CSS_SELECTOR, "#log-lines li") if li.is_displayed()]
    Select(driver.find_element(By.ID, "step-filter")).select_by_value("")

    # cancel the new (pending) task
    driver.find_element(By.ID, "cancel-btn").click()
    wait_for(
        driver,
        lambda d: d.find_element(By.CSS_SELECTOR, "#detail-status .badge").text == "cancelled",
        ACTION_TIMEOUT_S,
    )
    assert stack.store.get_task(new_id, with_steps=False)["status"] == "cancelled"

    # retry the failed task
    driver.execute_script(f"location.hash = '#/tasks/{stack.failed_id}'")
    wait_for(driver, lambda d: d.find_element(By.ID, "retry-btn").is_displayed(), message="retry button")
    driver.find_element(By.ID, "retry-btn").click()
    wait_for_notice(driver, "being retried")
    wait_for(
        driver,
        lambda d: d.find_element(By.CSS_SELECTOR, "#detail-status .badge").text in ("pending", "running"),
        message="retried task pending",
    )
    retried = stack.store.get_task(stack.failed_id)
    assert retried["status"] in ("pending", "running")
    assert [s["status"] for s in retried["steps"]][:2] == ["completed", "pending"]

    # readable on a phone
    driver.switch_to.default_content()
    driver.set_window_size(390, 844)
    driver.get(f"{stack.base_url}/api/workflow/ui/")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#task-rows tr"), message="rows on mobile")
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 390
    shot(driver, ui_artifacts_dir, "list-mobile.png")


CHART_EXP = "chart_exp"


def chart_task(
    store: WorkflowStore, name: str, auc: float, logloss: float, last_step: str, fails: bool
) -> int:
    """A task of CHART_EXP whose steps up to `last_step` ran (the last one failed, if `fails`),
    train reporting these final metrics and data_upload a transfer's MB/s."""
    task_id = store.create_task(**{**NEW_TASK, "name": name, "experiment_id": CHART_EXP})
    for step in STAGE_NAMES[: STAGE_NAMES.index(last_step) + 1]:
        store.start_step(task_id, step)
        if step == last_step and fails:
            store.fail_step(task_id, step, "out of memory")
            break
        result = {
            "data_upload": {"bytes": 48_000_000, "seconds": 4.0, "mb_per_s": 12.0},
            "train": {"auc": auc, "logloss": logloss, "model": "DeepFM"},
        }.get(step, {})
        store.complete_step(task_id, step, result)
    return task_id


def chart_state(driver: Any, canvas: str) -> Any:
    """What Chart.js drew on that canvas: its labels, and each dataset's label, points and point shapes."""
    return driver.execute_script(
        """const c = Chart.getChart(document.getElementById(arguments[0]));
        if (!c || c.canvas.closest('.chart-box').hidden) return null;
        return {labels: c.data.labels || [], sets: c.data.datasets.map(d => (
          {label: d.label, data: d.data, pointStyle: d.pointStyle, borderDash: d.borderDash}))};""",
        canvas,
    )


def test_charts_show_the_training_curve_live_the_timeline_and_the_experiment(
    browser: Any, ui_stack: UiStack, ui_artifacts_dir: Path
) -> None:
    """A task in training: its curve gains the epochs the job reports while the page is open;
    the timeline has a bar per started stage with its status, duration and a transfer's MB/s;
    the experiment chart has its trained tasks oldest first, published ones as diamonds. Every
    series differs by dash or point shape, not colour alone."""
    from fuxictr_workflow.store import EpochRecord

    store = ui_stack.store
    published = [
        chart_task(store, f"chart-{i}", 0.70 + i / 100, 0.50 - i / 100, "hive_upload", False) for i in (1, 2)
    ]
    held = chart_task(store, "chart-infer-failed", 0.74, 0.47, "infer", True)
    running = store.create_task(**{**NEW_TASK, "name": "chart-training", "experiment_id": CHART_EXP})
    for step in ("data_fetch", "data_upload"):
        store.start_step(running, step)
        store.complete_step(running, step, {"mb_per_s": 12.0} if step == "data_upload" else {})
    store.start_step(running, "train")
    epochs = [EpochRecord(n, 0.70 + n / 100, 0.55 - n / 100, 0.60 - n / 50) for n in range(1, 5)]
    lines = [("INFO", f"epoch {e.epoch}") for e in epochs]
    assert store.append_job_lines(running, "train", "job-1", 0, 2, lines[:2], epochs[:2]) is not None

    login(browser, ui_stack)
    browser.get(f"{ui_stack.base_url}/api/workflow/ui/#/tasks/{running}")
    curve = wait_for(browser, lambda d: chart_state(d, "curve-chart"), message="training curve")
    assert [s["label"] for s in curve["sets"]] == ["validation AUC", "validation logloss", "training loss"]
    assert [len(s["data"]) for s in curve["sets"]] == [2, 2, 2]
    shapes = {(s["pointStyle"], tuple(s["borderDash"])) for s in curve["sets"]}
    assert len(shapes) == 3, "the curve's series must differ by more than colour"

    # live: the next poll's epochs appear without a reload
    assert store.append_job_lines(running, "train", "job-1", 2, 4, lines[2:], epochs[2:]) is not None
    curve = wait_for(
        browser,
        lambda d: (c := chart_state(d, "curve-chart")) and len(c["sets"][0]["data"]) == 4 and c,
        message="the curve's new epochs",
    )
    assert [p["y"] for p in curve["sets"][0]["data"]] == pytest.approx([e.auc for e in epochs])
    assert [p["x"] for p in curve["sets"][0]["data"]] == [1, 2, 3, 4]

    timeline = wait_for(browser, lambda d: chart_state(d, "timeline-chart"), message="stage timeline")
    labels = timeline["labels"]
    assert [name for name, _ in labels] == ["data_fetch", "data_upload", "train"], labels
    assert labels[0][1].startswith("completed, ") and labels[2][1].startswith("running, ")
    assert labels[1][1].endswith(" s, 12.0 MB/s"), labels
    assert all(start <= end for start, end in timeline["sets"][0]["data"])

    history = wait_for(browser, lambda d: chart_state(d, "history-chart"), message="experiment chart")
    assert history["labels"] == [f"#{t}" for t in (*published, held)]  # the running task has no metrics yet
    auc, logloss = history["sets"]
    assert auc["data"] == pytest.approx([0.71, 0.72, 0.74]) and logloss["data"] == pytest.approx(
        [0.49, 0.48, 0.47]
    )
    assert auc["pointStyle"] == ["rectRot", "rectRot", "crossRot"]
    assert "published" in text_of(browser, "#history-caption")
    browser.execute_script("document.querySelector('.charts').scrollIntoView()")
    shot(browser, ui_artifacts_dir, "charts.png")
    csp = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert not csp, csp


def test_bad_form_shows_the_api_field_errors(browser: Any, ui_stack: UiStack) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser
    login(driver, ui_stack)
    driver.get(f"{ui_stack.base_url}/api/workflow/ui/")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#task-rows tr"), message="rows")
    before = newest_task_id(ui_stack.store)

    # keyboard only: Tab to "New task", Enter opens the form, Enter in a field submits it
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    for _ in range(5):
        if driver.switch_to.active_element.get_attribute("id") == "new-task-btn":
            break
        driver.switch_to.active_element.send_keys(Keys.TAB)
    assert driver.switch_to.active_element.get_attribute("id") == "new-task-btn"
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(driver, lambda d: d.find_element(By.ID, "create-dialog").is_displayed())
    assert driver.switch_to.active_element.get_attribute("id") == "f-name"

    bad = {**NEW_TASK, "experiment_id": "exp; rm -rf /", "hive_table": "not a table"}
    for field, value in bad.items():
        driver.find_element(By.ID, f"f-{field}").send_keys(value)
    driver.find_element(By.ID, "f-hive_table").send_keys(Keys.ENTER)

    wait_for(driver, lambda d: d.find_element(By.ID, "e-hive_table").text, message="hive_table error")
    wait_for(driver, lambda d: d.find_element(By.ID, "e-experiment_id").text, message="experiment_id error")
    for field in ("hive_table", "experiment_id"):
        assert driver.find_element(By.ID, f"f-{field}").get_attribute("aria-invalid") == "true"
    for field in ("name", "sample_sql", "infer_sql", "hdfs_path"):
        assert driver.find_element(By.ID, f"e-{field}").text == ""
    assert driver.find_element(By.ID, "create-dialog").is_displayed()
    assert newest_task_id(ui_stack.store) == before

    # an unknown server, then an empty required field: each named next to its field (the
    # server is authorized before the other fields are read, so its error comes alone first)
    name = driver.find_element(By.ID, "f-name")
    name.clear()
    driver.find_element(By.ID, "f-hive_table").clear()
    driver.find_element(By.ID, "f-hive_table").send_keys("demo.ok_table")
    driver.find_element(By.ID, "f-experiment_id").clear()
    driver.find_element(By.ID, "f-experiment_id").send_keys("demo_exp")
    driver.find_element(By.ID, "f-server").send_keys("no_such_server")
    driver.find_element(By.ID, "create-submit").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "e-server").text, message="server error")
    assert "no_such_server" in driver.find_element(By.ID, "e-server").text
    driver.find_element(By.ID, "f-server").clear()
    driver.find_element(By.ID, "create-submit").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "e-name").text, message="name error")
    assert driver.find_element(By.ID, "e-hive_table").text == ""
    assert driver.find_element(By.ID, "e-server").text == ""
    assert newest_task_id(ui_stack.store) == before


def test_page_without_session_shows_sign_in_and_no_data(browser: Any, ui_stack: UiStack) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(f"{ui_stack.base_url}/api/workflow/ui/")
    wait_for(driver, lambda d: "sign in" in text_of(d, "#notice").lower(), message="sign-in notice")
    assert not driver.find_elements(By.CSS_SELECTOR, "#task-rows tr")


# ---------- the page's data endpoints refuse callers without a session ----------


def api_get(stack: UiStack, path: str) -> Any:
    req = urllib.request.Request(
        f"{stack.base_url}{path}", headers={"Authorization": f"Bearer {stack.token()}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def status_of(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None
) -> int:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.parametrize("cookie", [None, "_token=not-a-jwt"])
def test_data_endpoints_refuse_unauthenticated(ui_stack: UiStack, cookie: str | None) -> None:
    base = f"{ui_stack.base_url}/api/workflow"
    headers = {"Content-Type": "application/json", **({"Cookie": cookie} if cookie else {})}
    tid = ui_stack.failed_id
    # no credential: 401; a malformed token: Airflow answers 403 (invalid JWT). Both refuse.
    refused = {401} if cookie is None else {403}
    assert status_of(f"{base}/tasks", headers=headers) in refused
    assert status_of(f"{base}/tasks?status=failed", headers=headers) in refused
    assert status_of(f"{base}/tasks/{tid}", headers=headers) in refused
    assert status_of(f"{base}/tasks", "POST", headers, json.dumps(NEW_TASK).encode()) in refused
    assert status_of(f"{base}/tasks/{tid}/retry", "POST", headers, b"") in refused
    assert status_of(f"{base}/tasks/{tid}/cancel", "POST", headers, b"") in refused
    # the page itself carries no data and is served to anyone (Airflow's UI frames it)
    assert status_of(f"{base}/ui/", headers=headers) == 200
    assert status_of(f"{base}/ui/static/app.js", headers=headers) == 200
    assert status_of(f"{base}/ui/static/..%2Fui.py", headers=headers) == 404

    import websockets

    async def ws_close_code() -> int | None:
        url = f"ws://{ui_stack.base_url.split('://', 1)[1]}/api/workflow/tasks/{tid}/logs"
        extra = {"Cookie": cookie} if cookie else {}
        try:
            async with websockets.connect(url, additional_headers=extra, open_timeout=30) as ws:
                await asyncio.wait_for(ws.recv(), 30)
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        except websockets.InvalidStatus as rejected:
            return rejected.response.status_code
        return None

    assert asyncio.run(ws_close_code()) in (1008, 403)


def test_page_and_assets_are_self_contained(ui_stack: UiStack) -> None:
    """Nothing is loaded from another origin; the CSP forbids it as well."""
    base = f"{ui_stack.base_url}/api/workflow/ui"
    with urllib.request.urlopen(f"{base}/", timeout=30) as resp:
        html = resp.read().decode()
        csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'self'" in csp
    for name in ("app.js", "charts.js", "chart.umd.min.js", "style.css"):
        with urllib.request.urlopen(f"{base}/static/{name}", timeout=30) as resp:
            text = resp.read().decode()
        # Chart.js names its home pages in its licence comments (/*! ... */), which load nothing
        code = re.sub(r"/\*!.*?\*/", "", text, flags=re.DOTALL)
        assert "http://" not in code and "https://" not in code and "//cdn" not in code, name
    assert "http://" not in html and "https://" not in html
