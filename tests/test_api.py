"""The plugin's task API on a real Airflow api-server: validation, auth, persistence, real
DAG runs in Airflow's DB, retry/cancel state rules and the log WebSocket."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fuxictr_workflow.api import field_checks
from scripts import demo
from tests.conftest import newest_task_id
from tests.seed_example import SEED_README_BODY as BODY
from tests.services.airflow_app import ApiServer, check_processes

pytestmark = pytest.mark.timeout(600)


def call(
    server: ApiServer,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = "admin",
    bearer: str | None = None,
) -> tuple[int, Any]:
    """The plugin's API as user `token`, or with the `bearer` token given."""
    headers = {"Content-Type": "application/json"}
    if token or bearer:
        headers["Authorization"] = f"Bearer {bearer or server.token(token)}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{server.base_url}/api/workflow{path}", data, headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def airflow_run(server: ApiServer, run_id: str) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{server.base_url}/api/v2/dags/fuxictr_workflow/dagRuns/{run_id}",
        headers={"Authorization": f"Bearer {server.token()}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_the_field_check_processes_start_and_stop_with_the_api_server(api_server: ApiServer) -> None:
    """Started by the app's lifespan (before any body is checked), so no POST pays for their
    imports; gone with the server (tests/services: airflow_stack.stop leaves no process)."""
    deadline = time.monotonic() + 120
    while len(check_processes(api_server)) < field_checks.CHECK_PROCESSES:
        assert time.monotonic() < deadline, "the check processes did not start with the API server"
        time.sleep(0.5)


def test_create_list_get(api_server: ApiServer) -> None:
    status, created = call(api_server, "POST", "/tasks", BODY)
    assert status == 201 and set(created) == {"task_id", "status"} and created["status"] == "pending"
    task_id = created["task_id"]
    status, listed = call(api_server, "GET", "/tasks")
    assert status == 200 and listed[0]["id"] == task_id
    seed_fields = {"id", "name", "experiment_id", "sample_sql", "infer_sql", "hdfs_path", "hive_table", "status",
                   "current_step", "created_at", "updated_at", "completed_at"}  # fmt: skip
    assert seed_fields <= set(listed[0])
    assert {k: listed[0][k] for k in BODY} == BODY
    status, task = call(api_server, "GET", f"/tasks/{task_id}")
    assert (
        status == 200
        and [s["step_name"] for s in task["steps"]][0] == "data_fetch"
        and len(task["steps"]) == 6
    )
    run = airflow_run(api_server, task["dag_run_id"])
    assert run["conf"]["task_id"] == task_id and run["state"] == "queued"
    assert call(api_server, "GET", "/tasks?status=failed")[1] == [] or all(
        t["status"] == "failed" for t in call(api_server, "GET", "/tasks?status=failed")[1]
    )
    by_run = call(api_server, "GET", f"/tasks?dag_run_id={task['dag_run_id']}")[1]
    assert [t["id"] for t in by_run] == [task_id]


def test_unknown_task_is_404(api_server: ApiServer) -> None:
    status, body = call(api_server, "GET", "/tasks/999999")
    assert status == 404 and "999999" in body["detail"]


BAD = [
    ({k: v for k, v in BODY.items() if k != "name"}, "name"),
    ({**BODY, "name": ""}, "name"),
    ({**BODY, "name": "x" * 300}, "name"),
    ({**BODY, "experiment_id": ""}, "experiment_id"),
    ({**BODY, "experiment_id": "exp; rm -rf /"}, "experiment_id"),
    ({**BODY, "experiment_id": "$(reboot)"}, "experiment_id"),
    ({**BODY, "sample_sql": ""}, "sample_sql"),
    ({**BODY, "sample_sql": "SELECT 1; DROP TABLE x"}, "sample_sql"),
    ({**BODY, "infer_sql": "DROP TABLE x"}, "infer_sql"),
    ({**BODY, "infer_sql": "INSERT INTO t SELECT 1"}, "infer_sql"),
    ({**BODY, "hdfs_path": "relative/path"}, "hdfs_path"),
    ({**BODY, "hdfs_path": "/data/../etc"}, "hdfs_path"),
    ({**BODY, "hdfs_path": "s3://bucket/x"}, "hdfs_path"),
    ({**BODY, "hive_table": "x; DROP TABLE y"}, "hive_table"),
    ({**BODY, "hive_table": "`db`.`t`"}, "hive_table"),
    ({**BODY, "hive_table": "no_db"}, "hive_table"),
    ({**BODY, "server": "nope"}, "server"),
    ({**BODY, "sample_sql": 42}, "sample_sql"),
]


@pytest.mark.parametrize(("body", "field"), BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_bad_bodies_are_422_naming_the_field(api_server: ApiServer, body: dict[str, Any], field: str) -> None:
    before = newest_task_id(api_server.store)
    status, error = call(api_server, "POST", "/tasks", body)
    assert status == 422, error
    assert any(field in (d.get("loc") or []) for d in error["detail"]), error
    assert newest_task_id(api_server.store) == before, "a rejected body must not create a task"


def test_auth(api_server: ApiServer) -> None:
    assert call(api_server, "GET", "/tasks", token=None)[0] == 401
    assert call(api_server, "POST", "/tasks", BODY, token=None)[0] == 401
    assert call(api_server, "GET", "/tasks", token="viewer")[0] == 200
    assert call(api_server, "POST", "/tasks", BODY, token="viewer")[0] == 403
    task_id = call(api_server, "POST", "/tasks", BODY)[1]["task_id"]
    assert call(api_server, "POST", f"/tasks/{task_id}/cancel", token="viewer")[0] == 403
    assert call(api_server, "GET", "/openapi.json", token=None)[0] == 401  # behind the same auth
    assert call(api_server, "GET", "/openapi.json", token="viewer")[0] == 200


def airflow_call(server: ApiServer, method: str, path: str, body: Any = None) -> Any:
    """Airflow's own REST API (/api/v2/dags/fuxictr_workflow...), as admin."""
    return server.airflow(method, f"fuxictr_workflow{path}", body)


def ti_states(server: ApiServer, run_id: str) -> dict[str, str | None]:
    tis = airflow_call(server, "GET", f"/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {ti["task_id"]: ti["state"] for ti in tis}


def events_of(server: ApiServer, run_id: str) -> list[tuple[str, str]]:
    """Airflow's audit log for one run of the DAG: (event, who) oldest first."""
    path = "/api/v2/eventLogs?dag_id=fuxictr_workflow&order_by=id&limit=1000"
    logs = demo.api(server.port, server.token(), "GET", path)["event_logs"]
    return [(e["event"], e["owner"]) for e in logs if e["run_id"] == run_id]


def test_retry_clears_the_run_from_the_failed_stage(api_server: ApiServer) -> None:
    """data_fetch succeeded, data_upload failed: retry re-queues the same run with data_fetch's
    task instances untouched and data_upload's and later ones cleared. A data_fetch task
    instance that failed after its step was recorded completed is marked succeeded, not run
    again. Airflow's audit log has the trigger, the clear and the mark as the caller's."""
    store = api_server.store
    task_id = call(api_server, "POST", "/tasks", BODY)[1]["task_id"]
    run_id = store.get_task(task_id, with_steps=False)["dag_run_id"]
    assert call(api_server, "POST", f"/tasks/{task_id}/retry")[0] == 409  # not failed
    store.start_step(task_id, "data_fetch")
    store.complete_step(task_id, "data_fetch")
    store.start_step(task_id, "data_upload")
    store.fail_step(task_id, "data_upload", "connection refused")
    for ti, state in [("data_fetch.hive_export", "success"), ("data_fetch.hdfs_download", "failed"),
                      ("data_upload", "failed")]:  # fmt: skip
        airflow_call(api_server, "PATCH", f"/dagRuns/{run_id}/taskInstances/{ti}", {"new_state": state})
    airflow_call(api_server, "PATCH", f"/dagRuns/{run_id}", {"state": "failed"})
    assert ti_states(api_server, run_id)["train"] == "skipped"
    before = events_of(api_server, run_id)
    assert before[0] == ("trigger_dag_run", "admin"), before

    status, body = call(api_server, "POST", f"/tasks/{task_id}/retry")
    assert status == 200 and body == {"task_id": task_id, "status": "pending"}
    task = call(api_server, "GET", f"/tasks/{task_id}")[1]
    assert [s["status"] for s in task["steps"][:2]] == ["completed", "pending"]
    assert task["status"] == "pending" and task["dag_run_id"] == run_id
    states = ti_states(api_server, run_id)
    assert states["data_fetch.hive_export"] == states["data_fetch.hdfs_download"] == "success"
    assert {t: s for t, s in states.items() if not t.startswith("data_fetch.")} == {
        t: None for t in states if not t.startswith("data_fetch.")
    }
    run = airflow_run(api_server, run_id)
    assert run["state"] == "queued" and run["conf"]["task_id"] == task_id
    assert run["triggering_user_name"] == "admin"
    assert events_of(api_server, run_id)[len(before) :] == [
        ("patch_task_instance", "admin"),
        ("post_clear_task_instances", "admin"),
    ]


def test_cancel_then_retry(api_server: ApiServer) -> None:
    task_id = call(api_server, "POST", "/tasks", BODY)[1]["task_id"]
    run_id = api_server.store.get_task(task_id, with_steps=False)["dag_run_id"]
    status, body = call(api_server, "POST", f"/tasks/{task_id}/cancel")
    assert status == 200 and body == {"task_id": task_id, "status": "cancelled"}
    assert call(api_server, "GET", f"/tasks/{task_id}")[1]["status"] == "cancelled"
    assert airflow_run(api_server, run_id)["state"] == "failed"
    assert ("patch_dag_run", "admin") in events_of(api_server, run_id)
    assert call(api_server, "POST", f"/tasks/{task_id}/cancel")[0] == 409
    assert call(api_server, "POST", f"/tasks/{task_id}/retry")[0] == 200
    assert airflow_run(api_server, run_id)["state"] == "queued"
    assert set(ti_states(api_server, run_id).values()) == {None}
    assert call(api_server, "POST", f"/tasks/{task_id}/retry")[0] == 409  # pending again
    assert call(api_server, "POST", "/tasks/999999/cancel")[0] == 404
    assert call(api_server, "POST", "/tasks/999999/retry")[0] == 404


def test_a_cancel_outlasts_a_locked_airflow_metadata_db(api_server: ApiServer) -> None:
    """Airflow's SQLite metadata DB stays locked past the api-server's busy timeout while a
    cancel fails the task's run: Airflow answers the plugin's PATCH with a 500, having done
    nothing (its audit-log commit gave up on the lock); the plugin sends it again, and once the
    lock is gone the run is failed, once, with one audit row."""
    assert api_server.env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite").startswith("sqlite")
    task_id = call(api_server, "POST", "/tasks", BODY)[1]["task_id"]
    run_id = api_server.store.get_task(task_id, with_steps=False)["dag_run_id"]
    token = api_server.token()
    db = sqlite3.connect(api_server.home / "airflow.db", isolation_level=None, check_same_thread=False)
    db.execute("BEGIN IMMEDIATE")  # the write lock, held past the api-server's 10 s busy timeout
    released = threading.Timer(13, db.rollback)
    released.start()
    try:
        status, body = call(api_server, "POST", f"/tasks/{task_id}/cancel", token=None, bearer=token)
    finally:
        released.join()
        db.close()
    assert status == 200 and body == {"task_id": task_id, "status": "cancelled"}, body
    assert airflow_run(api_server, run_id)["state"] == "failed"
    assert events_of(api_server, run_id).count(("patch_dag_run", "admin")) == 1


def test_retry_without_a_run_in_airflow_starts_one(api_server: ApiServer) -> None:
    """A task whose run is not in Airflow (its trigger failed, or it came from another
    Airflow's `dags test`) gets a new run on retry."""
    store = api_server.store
    no_run = store.create_task(**BODY, server="local")
    store.fail_task(no_run, "could not trigger")
    other = store.create_task(**BODY, server="local", dag_run_id="manual__elsewhere")
    store.fail_task(other, "failed elsewhere")
    for task_id, prefix in [
        (no_run, f"workflow_task_{no_run}__"),
        (other, f"workflow_task_{other}_retry_1__"),
    ]:
        assert call(api_server, "POST", f"/tasks/{task_id}/retry")[0] == 200
        task = store.get_task(task_id, with_steps=False)
        assert task["dag_run_id"].startswith(prefix) and task["dag_id"] == "fuxictr_workflow", task
        assert airflow_run(api_server, task["dag_run_id"])["state"] == "queued"


def test_a_refused_trigger_fails_the_task_with_the_reason(api_server: ApiServer) -> None:
    """Airflow cannot take the run (the DAG is paused): the retry answers 503, the task is
    failed with the reason (and stays retryable), and no run id stays recorded for it, so a
    run someone creates later with that id is not the task's."""
    store = api_server.store
    task_id = store.create_task(**BODY, server="local")
    store.fail_task(task_id, "failed elsewhere")
    airflow_call(api_server, "PATCH", "", {"is_paused": True})
    try:
        status, body = call(api_server, "POST", f"/tasks/{task_id}/retry")
    finally:
        airflow_call(api_server, "PATCH", "", {"is_paused": False})
    assert status == 503 and "paused" in body["detail"], body
    task = store.get_task(task_id, with_steps=False)
    assert task["status"] == "failed" and "paused" in task["error_message"]
    assert task["dag_run_id"] is None and task["dag_id"] is None
    assert call(api_server, "POST", f"/tasks/{task_id}/retry")[0] == 200  # a run of its own now
    assert store.get_task(task_id, with_steps=False)["dag_run_id"].startswith(f"workflow_task_{task_id}__")


def test_concurrent_creates(api_server: ApiServer) -> None:
    with ThreadPoolExecutor(10) as pool:
        results = list(
            pool.map(lambda i: call(api_server, "POST", "/tasks", {**BODY, "name": f"c{i}"}), range(10))
        )
    assert [s for s, _ in results] == [201] * 10
    ids = {b["task_id"] for _, b in results}
    assert len(ids) == 10
    runs = {api_server.store.get_task(i, with_steps=False)["dag_run_id"] for i in ids}
    assert len(runs) == 10 and None not in runs
    for run_id in runs:
        assert airflow_run(api_server, run_id)["dag_run_id"] == run_id


async def _collect(url: str) -> tuple[list[dict[str, Any]], int | None]:
    import websockets

    events = []
    async with websockets.connect(url, open_timeout=20) as ws:
        async for raw in ws:
            events.append(json.loads(raw))
    return events, ws.close_code


def ws_url(server: ApiServer, task_id: int, **query: Any) -> str:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    return f"ws://127.0.0.1:{server.port}/api/workflow/tasks/{task_id}/logs?{qs}"


def test_websocket_replay_live_and_close(api_server: ApiServer) -> None:
    store = api_server.store
    task_id = call(api_server, "POST", "/tasks", BODY)[1]["task_id"]
    store.start_step(task_id, "data_fetch")
    store.append_log(task_id, "data_fetch", "INFO", "past 1")

    async def scenario() -> tuple[list[dict[str, Any]], int | None, list[dict[str, Any]]]:
        client = asyncio.create_task(_collect(ws_url(api_server, task_id, token=api_server.token())))
        await asyncio.sleep(1.0)
        for i in range(5):
            await asyncio.to_thread(store.append_log, task_id, "data_fetch", "INFO", f"live {i}")
        await asyncio.to_thread(store.fail_step, task_id, "data_fetch", "boom")
        await asyncio.to_thread(store.append_log, task_id, "data_fetch", "ERROR", "last")
        events, code = await asyncio.wait_for(client, 60)
        resumed, _ = await _collect(ws_url(api_server, task_id, token=api_server.token(), after=3))
        return events, code, resumed

    events, code, resumed = asyncio.run(scenario())
    messages = [e["message"] for e in events]
    assert messages[0] == "past 1"
    assert [m for m in messages if m.startswith("live")] == [f"live {i}" for i in range(5)]
    assert messages[-1] == "last" and code == 1000
    assert all(set(e) == {"task_id", "step", "message", "level", "timestamp"} for e in events)
    assert events[-1]["timestamp"].endswith("Z")
    assert [e["message"] for e in resumed] == messages[3:]


def test_websocket_requires_token(api_server: ApiServer) -> None:
    import websockets

    task_id = call(api_server, "POST", "/tasks", BODY)[1]["task_id"]

    async def attempt(url: str) -> int | None:
        try:
            async with websockets.connect(url, open_timeout=20) as ws:
                await ws.recv()
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        except websockets.InvalidStatus as err:
            return err.response.status_code
        return None

    assert asyncio.run(attempt(ws_url(api_server, task_id))) == 1008
    assert asyncio.run(attempt(ws_url(api_server, task_id, token="bogus"))) == 1008
    assert asyncio.run(attempt(ws_url(api_server, 999999, token=api_server.token()))) == 4404


def test_websocket_fan_out_to_many_clients(api_server: ApiServer) -> None:
    """Several clients of one task (one shared poller) each get every event once, in order; a
    client that leaves early does not disturb the others; a late client gets the full replay."""
    store = api_server.store
    task_id = call(api_server, "POST", "/tasks", BODY)[1]["task_id"]
    store.start_step(task_id, "train")
    token = api_server.token()

    async def leaver() -> None:
        import websockets

        async with websockets.connect(ws_url(api_server, task_id, token=token), open_timeout=20) as ws:
            await ws.recv()

    async def scenario() -> list[tuple[list[dict[str, Any]], int | None]]:
        store.append_log(task_id, "train", "INFO", "line 0")
        clients = [asyncio.create_task(_collect(ws_url(api_server, task_id, token=token))) for _ in range(4)]
        resumed = asyncio.create_task(_collect(ws_url(api_server, task_id, token=token, after=1)))
        await leaver()
        await asyncio.sleep(0.5)
        for i in range(1, 200):
            await asyncio.to_thread(store.append_log, task_id, "train", "INFO", f"line {i}")
        await asyncio.to_thread(store.complete_step, task_id, "train")
        await asyncio.to_thread(store.fail_task, task_id, "stopped")
        results = await asyncio.wait_for(asyncio.gather(*clients, resumed), 60)
        late = await _collect(ws_url(api_server, task_id, token=token))
        return [*results, late]

    *clients, resumed, late = asyncio.run(scenario())
    expected = [e["message"] for e in store.logs_after(task_id, limit=10_000)]
    assert expected[:200] == [f"line {i}" for i in range(200)]
    for events, code in [*clients, late]:
        assert [e["message"] for e in events] == expected and code == 1000
    assert [e["message"] for e in resumed[0]] == expected[1:] and resumed[1] == 1000
