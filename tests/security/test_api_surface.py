"""Hostile requests against the real API server (Airflow api-server with the plugin mounted):
each must be refused, and nothing may have happened (no task, no DAG run, no state change).

The stack has two training servers, so two DAGs: ``fuxictr_workflow`` (server ``local``) and
``fuxictr_workflow__gpu2``. Users: ``admin``; ``viewer`` (read-only everywhere); ``alice``
(role user, scoped to the local DAG), ``bob`` (role user, scoped to the gpu2 DAG), ``vera``
(viewer, scoped to the local DAG). The scopes come from a SimpleAuthManager subclass used only
here (tests/services/dag_scoped_auth.py): SimpleAuthManager has no per-DAG rights, so the
test asks a real auth manager that has them whether the plugin asked about the right DAG.
The api-server is the one all tests/security modules share (stack.py).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fuxictr_workflow.store import WorkflowStore
from tests.conftest import new_task
from tests.security.stack import ALLOWED_PREFIX, CLI_TOKEN_S, DB, MAIN, OTHER, WS_CAP, call, token
from tests.services.airflow_app import ApiServer, check_processes

pytestmark = pytest.mark.timeout(600)

EVIL = "http://evil.example"

BODY = {
    "name": "sec_task",
    "experiment_id": "exp_001",
    "sample_sql": "SELECT * FROM train_data WHERE secret_main = 1",
    "infer_sql": "SELECT * FROM infer_data WHERE date = '2024-01-02'",
    "hdfs_path": f"{ALLOWED_PREFIX}/path/to/data",  # what the shared stack allows (stack.py)
    "hive_table": f"{DB}.output_table",
}
OTHER_BODY = {**BODY, "server": "gpu2", "sample_sql": "SELECT * FROM gpu2_only WHERE secret_gpu2 = 1"}


@pytest.fixture(scope="module")
def stack(security_api: ApiServer) -> ApiServer:
    """The api-server shared by tests/security (stack.py): its users, DAG scopes, CLI token
    lifetime and WebSocket cap are the ones described above."""
    return security_api


def airflow_runs(api: ApiServer, dag_id: str) -> dict[str, dict[str, Any]]:
    req = urllib.request.Request(
        f"{api.base_url}/api/v2/dags/{dag_id}/dagRuns?limit=1000",
        headers={"Authorization": f"Bearer {token(api, 'admin')}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return {r["dag_run_id"]: r for r in json.loads(resp.read())["dag_runs"]}


def snapshot(api: ApiServer) -> tuple[Any, ...]:
    """Everything a refused request must leave alone: tasks (with status) and both DAGs' runs."""
    tasks = [(t["id"], t["status"], t["dag_run_id"]) for t in api.store.list_tasks(limit=10_000)]
    runs = {d: {k: r["state"] for k, r in airflow_runs(api, d).items()} for d in (MAIN, OTHER)}
    return tuple(tasks), json.dumps(runs, sort_keys=True)


@pytest.fixture(scope="module")
def tasks(stack: ApiServer) -> dict[str, int]:
    """One task on each server, created by admin: `main` (pending) and `other` (failed)."""
    main = call(stack, "POST", "/tasks", BODY)
    other = call(stack, "POST", "/tasks", OTHER_BODY)
    assert main[0] == 201 and other[0] == 201, (main, other)
    stack.store.fail_task(other[1]["task_id"], "failed for the test")
    return {"main": main[1]["task_id"], "other": other[1]["task_id"]}


# -------- authorization checks the DAG of the task's server --------

REFUSED_CROSS_DAG = [
    ("alice", "GET", "/tasks/{other}", None),
    ("alice", "POST", "/tasks", OTHER_BODY),
    ("alice", "POST", "/tasks/{other}/retry", None),
    ("alice", "POST", "/tasks/{other}/cancel", None),
    ("bob", "GET", "/tasks/{main}", None),
    ("bob", "POST", "/tasks", BODY),
    ("bob", "POST", "/tasks/{main}/cancel", None),
    ("vera", "GET", "/tasks/{other}", None),
    ("vera", "POST", "/tasks/{main}/cancel", None),
    ("viewer", "POST", "/tasks/{other}/retry", None),
    # refused before the body is read: a decision on another DAG's task is never parsed
    ("alice", "POST", "/tasks/{other}/quality-gate", {"decision": "approve"}),
    ("bob", "POST", "/tasks/{main}/quality-gate", "not json"),
    ("viewer", "POST", "/tasks/{main}/quality-gate", {"decision": "reject"}),
]  # vera and viewer may run no DAG at all: their POST /tasks is below (nothing named)


@pytest.mark.parametrize(
    ("user", "method", "path", "body"),
    REFUSED_CROSS_DAG,
    ids=[f"{u}-{m}-{p}" for u, m, p, _ in REFUSED_CROSS_DAG],
)
def test_cross_dag_and_viewer_requests_are_403(
    stack: ApiServer, tasks: dict[str, int], user: str, method: str, path: str, body: Any
) -> None:
    before = snapshot(stack)
    status, reply = call(stack, method, path.format(**tasks), body, user=user)
    assert status == 403, reply
    assert "fuxictr_workflow" in reply["detail"]  # names the DAG it asked about
    assert snapshot(stack) == before


@pytest.mark.parametrize(
    ("body", "status_", "says"),
    [
        ({"decision": "approve"}, 409, "is not waiting for a quality-gate decision"),
        ({"decision": "publish"}, 422, "decision"),
        ({"decision": "approve", "by": "root"}, 422, "by"),
    ],
)
def test_a_gate_decision_is_checked_after_authorization(
    stack: ApiServer, tasks: dict[str, int], body: Any, status_: int, says: str
) -> None:
    """alice may edit runs of `main`'s DAG: her body is read, and refused for what it says or
    because nothing waits for a decision (the gate's whole path: tests/e2e/test_quality_gate.py)."""
    before = snapshot(stack)
    status, reply = call(stack, "POST", f"/tasks/{tasks['main']}/quality-gate", body, user="alice")
    assert status == status_ and says in json.dumps(reply), reply
    assert snapshot(stack) == before


def test_listing_shows_only_readable_dags(stack: ApiServer, tasks: dict[str, int]) -> None:
    def listed(user: str, query: str = "") -> list[dict[str, Any]]:
        status, rows = call(stack, "GET", f"/tasks{query}", user=user)
        assert status == 200
        return rows

    for user, mine, theirs in [
        ("alice", "main", "other"),
        ("vera", "main", "other"),
        ("bob", "other", "main"),
    ]:
        rows = listed(user)
        ids = {r["id"] for r in rows}
        assert tasks[mine] in ids and tasks[theirs] not in ids, (user, ids)
        secret = "secret_gpu2" if theirs == "other" else "secret_main"
        assert secret not in json.dumps(rows)
        their_run = stack.store.get_task(tasks[theirs], with_steps=False)["dag_run_id"]
        assert listed(user, f"?dag_run_id={their_run}") == []
    assert {tasks["main"], tasks["other"]} <= {r["id"] for r in listed("viewer")}
    # the allowed side works, so the refusals above are about the DAG, not the user
    assert call(stack, "GET", f"/tasks/{tasks['main']}", user="alice")[0] == 200
    assert call(stack, "GET", f"/tasks/{tasks['other']}", user="bob")[0] == 200


def test_triggering_user_is_the_caller_for_bearer_and_cookie(stack: ApiServer) -> None:
    status, created = call(stack, "POST", "/tasks", BODY, user="alice")
    assert status == 201
    run_id = stack.store.get_task(created["task_id"], with_steps=False)["dag_run_id"]
    assert airflow_runs(stack, MAIN)[run_id]["triggering_user_name"] == "alice"

    cookie = {"Cookie": f"_token={token(stack, 'bob')}", "X-Requested-By": "test", "Origin": stack.base_url}
    status, created = call(stack, "POST", "/tasks", OTHER_BODY, user=None, headers=cookie)
    assert status == 201, created
    run_id = stack.store.get_task(created["task_id"], with_steps=False)["dag_run_id"]
    assert airflow_runs(stack, OTHER)[run_id]["triggering_user_name"] == "bob"


# -------- authorization before the body is looked at --------

# What a validation message would name: servers, DAGs, the output database, the HDFS allowlist.
CONFIG_WORDS = ["local", "gpu2", "fuxictr_workflow", DB, ALLOWED_PREFIX, "webhdfs", "output_databases",
                "allowed_path_prefixes", "allowed_urls"]  # fmt: skip
INVALID_BODIES: list[tuple[str, Any]] = [
    ("unknown server", {**BODY, "server": "nope"}),
    ("other server", OTHER_BODY),
    ("statement", {**BODY, "sample_sql": "DROP TABLE x"}),
    ("database not allowed", {**BODY, "hive_table": "other_db.t"}),
    ("path not allowed", {**BODY, "hdfs_path": "/elsewhere/x"}),
    ("80,000 characters", {**BODY, "sample_sql": "SELECT " + "1+" * 39_996 + "1"}),
    ("600 parentheses", {**BODY, "infer_sql": "SELECT " + "(" * 600 + "1" + ")" * 600}),
    ("server not a string", {**BODY, "server": ["local"]}),
    ("not JSON", b"{"),
    ("not an object", b"[1]"),
]


@pytest.mark.parametrize("user", ["viewer", "vera"])
@pytest.mark.parametrize(("label", "body"), INVALID_BODIES, ids=[label for label, _ in INVALID_BODIES])
def test_a_caller_who_may_run_no_dag_gets_403_and_learns_nothing(
    stack: ApiServer, user: str, label: str, body: Any
) -> None:
    """viewer (read-only everywhere) and vera (viewer of the main DAG) may run no workflow DAG:
    whatever they send, the answer is the same 403, naming no server, DAG, database or path."""
    before = snapshot(stack)
    raw = body if isinstance(body, bytes) else None
    status, reply = call(stack, "POST", "/tasks", None if raw else body, user=user, raw=raw)
    assert status == 403, reply
    assert reply == {"detail": "you may not run any workflow DAG"}
    assert not [w for w in CONFIG_WORDS if w in json.dumps(reply)]
    assert snapshot(stack) == before


def test_a_caller_is_authorized_on_the_named_server_before_validation(stack: ApiServer) -> None:
    """alice may run the main DAG only. An invalid body for another server, or for a server that
    does not exist, is 403 naming the DAG she asked for (the two look alike), not a 422 that
    would name what is configured; for her own DAG she gets the 422. An admin may run any DAG,
    so a server that does not exist is a 422 listing the ones there are."""
    before = snapshot(stack)
    bad = {"sample_sql": "DROP TABLE x", "hive_table": "other_db.t", "hdfs_path": "/elsewhere/x"}
    for server, dag in (("gpu2", OTHER), ("nope", "fuxictr_workflow__nope")):
        status, reply = call(stack, "POST", "/tasks", {**BODY, **bad, "server": server}, user="alice")
        assert status == 403, reply
        assert reply == {"detail": f"you may not run DAG {dag} (server {server!r})"}
    status, reply = call(stack, "POST", "/tasks", {**BODY, **bad}, user="alice")
    assert status == 422 and {d["loc"][-1] for d in reply["detail"]} == set(bad), reply
    status, reply = call(stack, "POST", "/tasks", {**BODY, "server": "nope"}, user="admin")
    assert status == 422 and reply["detail"][0]["loc"] == ["body", "server"], reply
    assert "yours: local, gpu2" in reply["detail"][0]["msg"]
    assert snapshot(stack) == before


def test_an_80000_character_query_is_422_naming_the_field(stack: ApiServer) -> None:
    """Over the token budget: refused after a fraction of the query is read. The time it took
    is printed (pytest -s shows it; no assertion on it: tests do not time)."""
    before = snapshot(stack)
    huge = "SELECT " + "1+" * 39_996 + "1"
    assert len(huge) == 80_000
    for fields in ({"sample_sql": huge}, {"sample_sql": huge, "infer_sql": huge}):
        started = time.monotonic()
        status, reply = call(stack, "POST", "/tasks", {**BODY, **fields})
        print(f"80,000-character query in {len(fields)} field(s): 422 in {time.monotonic() - started:.3f} s")
        assert status == 422, reply
        named = {d["loc"][-1] for d in reply["detail"]}
        # over the token budget: each query named; on a machine too busy to tokenize that far
        # within the request's time limit, over that: the query being checked when time ran out
        assert all("tokens" in d["msg"] or "took more than" in d["msg"] for d in reply["detail"]), reply
        timed_out = any("took more than" in d["msg"] for d in reply["detail"])
        assert (named and named <= set(fields)) if timed_out else named == set(fields), reply
    assert snapshot(stack) == before


def test_a_query_being_checked_holds_up_no_other_request(stack: ApiServer) -> None:
    """The queries are checked off the event loop: while POSTs whose two queries take the whole
    check (or the request's time limit) wait for their 422s, task lists asked for meanwhile are
    answered. On the event loop, a check would hold every request that came after it began, so
    no list could be asked for and answered inside one POST's wait."""
    # within the token budget, and refused only after most of it is parsed
    slow = "SELECT " + ", ".join(f"c{i} + {i}" for i in range(4500)) + ", java_method('a', 'b') FROM t"
    before = snapshot(stack)

    def posts() -> list[tuple[float, float]]:
        waits = []
        for _ in range(3):
            sent = time.monotonic()
            status, reply = call(stack, "POST", "/tasks", {**BODY, "sample_sql": slow, "infer_sql": slow})
            waits.append((sent, time.monotonic()))
            assert status == 422 and {d["loc"][-1] for d in reply["detail"]} <= {"sample_sql", "infer_sql"}, (
                reply
            )
        return waits

    lists: list[tuple[float, float]] = []
    with ThreadPoolExecutor(1) as pool:
        posted = pool.submit(posts)
        while not posted.done():
            sent = time.monotonic()
            assert call(stack, "GET", "/tasks?limit=1")[0] == 200
            lists.append((sent, time.monotonic()))
        waits = posted.result()
    inside = [ls for ls in lists if any(ps <= ls[0] and ls[1] <= pd for ps, pd in waits)]
    assert len(inside) >= 3, (waits, lists)
    assert snapshot(stack) == before


def test_a_killed_check_process_costs_no_request_its_answer(stack: ApiServer) -> None:
    """The field checks run in processes beside the API server; when they die (killed, out of
    memory), the next body is still checked, by new ones."""
    assert call(stack, "POST", "/tasks", {**BODY, "hive_table": "x"})[0] == 422  # the checks are up
    victims = check_processes(stack)
    assert victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    status, reply = call(stack, "POST", "/tasks", {**BODY, "hive_table": "x"})
    assert status == 422 and [d["loc"][-1] for d in reply["detail"]] == ["hive_table"], reply
    replaced = check_processes(stack)
    assert replaced and not replaced & victims, (victims, replaced)


# -------- cross-site requests --------

CROSS_SITE = [
    # cookie-authenticated POST without the header (what an HTML form on another site sends)
    ({"Cookie": "_token={admin}"}, "application/json"),
    ({"Cookie": "_token={admin}", "Origin": EVIL}, "application/x-www-form-urlencoded"),
    ({"Cookie": "_token={admin}", "Origin": EVIL}, "text/plain"),
    # the header alone does not help a page of another origin
    ({"Cookie": "_token={admin}", "X-Requested-By": "x", "Origin": EVIL}, "application/json"),
    ({"Cookie": "_token={admin}", "X-Requested-By": "x", "Origin": "null"}, "application/json"),
    # nor a Bearer token sent from another origin's page
    ({"Authorization": "Bearer {admin}", "Origin": EVIL}, "application/json"),
]


@pytest.mark.parametrize(
    ("headers", "content_type"), CROSS_SITE, ids=[str(i) for i in range(len(CROSS_SITE))]
)
@pytest.mark.parametrize("path", ["/tasks", "/tasks/{main}/cancel"])
def test_cross_site_posts_are_403(
    stack: ApiServer, tasks: dict[str, int], headers: dict[str, str], content_type: str, path: str
) -> None:
    filled = {k: v.format(admin=token(stack, "admin")) for k, v in headers.items()}
    filled["Content-Type"] = content_type
    before = snapshot(stack)
    status, reply = call(stack, "POST", path.format(**tasks), BODY, user=None, headers=filled)
    assert status == 403, reply
    assert snapshot(stack) == before


def test_same_origin_cookie_post_with_header_is_accepted(stack: ApiServer) -> None:
    headers = {"Cookie": f"_token={token(stack, 'admin')}", "X-Requested-By": "ui", "Origin": stack.base_url}
    assert call(stack, "POST", "/tasks", BODY, user=None, headers=headers)[0] == 201


# -------- bodies --------


def test_oversized_body_is_413_before_parsing(stack: ApiServer) -> None:
    before = snapshot(stack)
    big = json.dumps({**BODY, "sample_sql": "SELECT 1 -- " + "x" * (1 << 20)}).encode()
    status, reply = call(stack, "POST", "/tasks", raw=big)
    assert status == 413 and "api.max_body_bytes" in reply["detail"]
    # not JSON at all: a parser would answer 422; the cap answers first
    status, _ = call(stack, "POST", "/tasks", raw=b"{" * ((1 << 20) + 1))
    assert status == 413
    assert snapshot(stack) == before


def test_chunked_oversized_body_is_413(stack: ApiServer) -> None:
    """No Content-Length: the cap counts what arrives."""
    before = snapshot(stack)
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60)
    piece = b"x" * 65536

    def body() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(40):  # 2.5 MiB
            yield piece

    try:
        conn.request(
            "POST",
            "/api/workflow/tasks",
            body=body(),
            headers={"Authorization": f"Bearer {token(stack, 'admin')}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        status = resp.status
    except (BrokenPipeError, ConnectionResetError):  # refused before all of it was sent
        status = 413
    finally:
        conn.close()
    assert status == 413
    assert snapshot(stack) == before


@pytest.mark.parametrize("extra", [{"serverx": "gpu2"}, {"priority": 1}, {"__proto__": {}}])
def test_unknown_fields_are_422_naming_them(stack: ApiServer, extra: dict[str, Any]) -> None:
    before = snapshot(stack)
    status, reply = call(stack, "POST", "/tasks", {**BODY, **extra})
    assert status == 422
    field = next(iter(extra))
    assert any(d["loc"] == ["body", field] and d["type"] == "extra_forbidden" for d in reply["detail"]), reply
    assert snapshot(stack) == before


# -------- API docs --------


def test_docs_are_off_and_schema_needs_auth(stack: ApiServer) -> None:
    assert call(stack, "GET", "/docs", user=None)[0] == 404
    assert call(stack, "GET", "/redoc", user=None)[0] == 404
    assert call(stack, "GET", "/openapi.json", user=None)[0] == 401
    status, schema = call(stack, "GET", "/openapi.json", user="vera")
    assert status == 200 and "/tasks" in schema["paths"]


# -------- WebSocket --------


def ws_url(api: ApiServer, task_id: int, tok: str | None = None, **query: Any) -> str:
    qs = "&".join(f"{k}={v}" for k, v in ({"token": tok} if tok else {}).items() | query.items())
    return f"ws://127.0.0.1:{api.port}/api/workflow/tasks/{task_id}/logs?{qs}"


async def close_code(url: str, headers: dict[str, str] | None = None, timeout: float = 60) -> int | None:
    """Connect, read until the server closes, return its close code."""
    import websockets

    try:
        async with websockets.connect(url, additional_headers=headers or {}, open_timeout=30) as ws:
            while True:
                await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    except websockets.InvalidStatus as err:
        return err.response.status_code
    except TimeoutError:
        return None  # still open


def test_websocket_refuses_foreign_origin(stack: ApiServer, tasks: dict[str, int]) -> None:
    tok = token(stack, "admin")
    url = ws_url(stack, tasks["main"])
    assert asyncio.run(close_code(url, {"Origin": EVIL, "Cookie": f"_token={tok}"})) == 1008
    assert asyncio.run(close_code(ws_url(stack, tasks["main"], tok), {"Origin": EVIL})) == 1008


async def close_of(url: str) -> tuple[int | None, str]:
    """The server's close code and reason for a connection it closes at once."""
    import websockets

    try:
        async with websockets.connect(url, open_timeout=30) as ws:
            await asyncio.wait_for(ws.recv(), 30)
    except websockets.ConnectionClosed as closed:
        return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")
    return None, "still open"


@pytest.mark.parametrize("after", ["10000001", "9" * 40, "-1", "abc"])
def test_websocket_after_out_of_range_is_refused_saying_so(
    stack: ApiServer, tasks: dict[str, int], after: str
) -> None:
    code, reason = asyncio.run(close_of(ws_url(stack, tasks["main"], token(stack, "admin"), after=after)))
    assert code == 1008 and "after must be a whole number from 0 to 10000000" in reason, (code, reason)


def test_websocket_refuses_other_dags_task(stack: ApiServer, tasks: dict[str, int]) -> None:
    assert asyncio.run(close_code(ws_url(stack, tasks["other"], token(stack, "alice")))) == 1008
    assert asyncio.run(close_code(ws_url(stack, tasks["main"], token(stack, "bob")))) == 1008


def cli_token(api: ApiServer, user: str) -> str:
    body = json.dumps({"username": user, "password": api.password(user)}).encode()
    req = urllib.request.Request(
        f"{api.base_url}/auth/token/cli", body, {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["access_token"]


def test_websocket_closes_when_its_token_expires(stack: ApiServer, tasks: dict[str, int]) -> None:
    """A stream that stays open (task still pending) ends at the token's expiry, and the
    expired token is then refused."""
    short = cli_token(stack, "alice")
    code = asyncio.run(close_code(ws_url(stack, tasks["main"], short), timeout=CLI_TOKEN_S * 20))
    assert code == 4401  # None would mean our read timed out with the stream still open
    assert asyncio.run(close_code(ws_url(stack, tasks["main"], short))) == 1008


def test_websocket_per_user_cap(stack: ApiServer, tasks: dict[str, int]) -> None:
    import websockets

    tok = token(stack, "bob")
    status, created = call(stack, "POST", "/tasks", OTHER_BODY)  # pending: its streams stay open
    assert status == 201

    async def scenario() -> tuple[int | None, int | None]:
        url = ws_url(stack, created["task_id"], tok)
        held = [await websockets.connect(url, open_timeout=30) for _ in range(WS_CAP)]
        try:
            over = await close_code(url)
        finally:
            for ws in held:
                await ws.close()
        # the closed ones no longer count; wait for the server to see them go
        for _ in range(100):
            async with websockets.connect(url, open_timeout=30) as ws:
                try:
                    await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    return over, None  # held open: accepted
                except websockets.ConnectionClosed as closed:
                    if not (closed.rcvd and closed.rcvd.code == 1013):
                        return over, closed.rcvd.code if closed.rcvd else None
        return over, 1013

    over, after = asyncio.run(scenario())
    assert over == 1013
    assert after is None, "a freed slot must be usable again"


def test_token_query_parameter_never_logged(stack: ApiServer, tasks: dict[str, int]) -> None:
    tok = token(stack, "admin")
    marker = tok.split(".")[2][:24]  # the signature part: appears nowhere else
    for url in (ws_url(stack, tasks["main"], tok, after=0), ws_url(stack, 999999, tok)):
        asyncio.run(close_code(url, timeout=2))
    assert asyncio.run(close_code(ws_url(stack, tasks["main"], "not-a-token"))) == 1008
    call(stack, "GET", f"/tasks?token={tok}")
    leaked = [
        str(path)
        for path in stack.home.rglob("*")
        if path.is_file()
        and path.suffix not in (".db", ".json", ".generated")
        and marker in path.read_text(errors="ignore")
    ]
    assert leaked == []
    # the handshake lines are logged, with the rest of their query string
    logs = "".join(p.read_text(errors="ignore") for p in (stack.home / "logs").glob("*.out"))
    assert f'"WebSocket /api/workflow/tasks/{tasks["main"]}/logs?after=0"' in logs


def test_slow_websocket_client_queue_is_bounded(store: WorkflowStore) -> None:
    """The log feed's per-client queue (real store, real TaskFeed, in process): a client that
    stops reading gets at most its cap of batches, then OVERFLOW (its socket closes with 1013
    and it resumes with after=N); a client that keeps reading gets every event."""
    from fuxictr_workflow.api.logs_ws import OVERFLOW, TaskFeed

    task_id = new_task(store)
    cap = 3

    async def scenario() -> tuple[list[Any], list[str], bool]:
        slow = TaskFeed.subscribe(store, task_id, 0, cap)
        fast = TaskFeed.subscribe(store, task_id, 0, cap)
        feed = TaskFeed.feeds[task_id]
        seen: list[str] = []
        try:
            for i in range(10):  # one batch each: the next line is written once this one arrived
                await asyncio.to_thread(store.append_log, task_id, "train", "INFO", f"line {i}")
                batch = await asyncio.wait_for(fast.get(), 30)
                assert batch is not None
                seen += [json.loads(text)["message"] for _, text in batch]
            queued = []
            while not slow.empty():
                queued.append(slow.get_nowait())
            return queued, seen, slow in feed.queues
        finally:
            TaskFeed.unsubscribe(task_id, slow)
            TaskFeed.unsubscribe(task_id, fast)
            feed.poller.cancel()

    queued, seen, still_subscribed = asyncio.run(scenario())
    assert len(queued) == cap + 1 and queued[-1] is OVERFLOW
    assert not still_subscribed
    assert seen == [f"line {i}" for i in range(10)]
