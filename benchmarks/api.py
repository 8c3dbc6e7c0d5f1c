"""Our task API vs Airflow's own REST API on one real api-server, plus WebSocket fan-out.

    python -m benchmarks.api [--tasks 10000] [--requests 200] [--lines 2000] [--clients 10]

Starts an api-server on 127.0.0.1 (own AIRFLOW_HOME), fills the workflow store with N tasks
and Airflow's DB with N matching DAG runs, then alternates GET /api/workflow/tasks?limit=100
with GET /api/v2/dags/fuxictr_workflow/dagRuns?limit=100, and measures log events from
append to arrival at `clients` WebSocket clients. Then the cost of hostile queries: how long a
POST with an 80,000-character query (over the token budget) and one with a query that takes
the whole time limit to check wait for their 422, and how the task list answers while such
checks run back to back (the check runs off the event loop). Prints one JSON object as its
last line.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts import airflow_stack  # noqa: E402
from tests.seed_example import SEED_README_BODY  # noqa: E402
from tests.services.airflow_app import ApiServer, start_api_server  # noqa: E402

# over the token budget: refused after the first 20,000 tokens are read
OVER_BUDGET_SQL = "SELECT " + "1+" * 39_996 + "1"
# within the token budget, refused only once most of it is parsed (a function that is not
# allowed), or when the request's time limit runs out first; sent in both query fields
SLOW_SQL = "SELECT " + ", ".join(f"c{i} + {i}" for i in range(4500)) + ", java_method('a', 'b') FROM t"

MAKE_RUNS = r"""
import sys
from airflow.models.dagbag import DBDagBag
from airflow.utils.session import create_session
from airflow.utils.state import DagRunState
from airflow.utils.types import DagRunTriggeredByType, DagRunType
from airflow.utils import timezone
first, count = int(sys.argv[1]), int(sys.argv[2])
with create_session() as session:
    dag = DBDagBag().get_latest_version_of_dag("fuxictr_workflow", session=session)
    for i in range(first, first + count):
        dag.create_dagrun(run_id=f"workflow_task_{i}", logical_date=None, data_interval=None,
            run_after=timezone.utcnow(), run_type=DagRunType.MANUAL,
            conf={"task_id": i, "name": f"bench-{i}", "experiment_id": "DeepFM_demo", "sample_sql": "SELECT 1",
                  "infer_sql": "SELECT 2", "hdfs_path": "/tmp/bench", "hive_table": "hive_db.t", "server": "local"},
            triggered_by=DagRunTriggeredByType.REST_API, triggering_user_name="bench",
            state=DagRunState.SUCCESS, session=session)
        if i % 500 == 0:
            session.commit()
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def fill(server: ApiServer, tasks: int) -> None:
    store = server.store
    for i in range(tasks):
        store.create_task(
            name=f"bench-{i}", experiment_id="DeepFM_demo", sample_sql="SELECT 1", infer_sql="SELECT 2",
            hdfs_path="/tmp/bench", hive_table="hive_db.t", server="local", dag_run_id=f"workflow_task_{i + 1}",
        )  # fmt: skip
    quiet = {**server.env, "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"}  # not a line per run
    subprocess.run([sys.executable, "-c", MAKE_RUNS, "1", str(tasks)], env=quiet, check=True)


LISTS = {
    "ours": "/api/workflow/tasks?limit=100",
    "airflow": "/api/v2/dags/fuxictr_workflow/dagRuns?limit=100",
}


def timed_gets(server: ApiServer, requests: int, paths: dict[str, str] = LISTS) -> dict[str, list[float]]:
    token = server.token()
    headers = {"Authorization": f"Bearer {token}"}
    conns = {k: http.client.HTTPConnection("127.0.0.1", server.port, timeout=60) for k in paths}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for i in range(requests + 10):
        for name in paths if i % 2 == 0 else reversed(list(paths)):
            start = time.perf_counter()
            conns[name].request("GET", paths[name], headers=headers)
            resp = conns[name].getresponse()
            body = resp.read()
            elapsed = (time.perf_counter() - start) * 1000
            assert resp.status == 200, body[:300]
            if i >= 10:  # warm-up
                times[name].append(elapsed)
    return times


def post_query(conn: http.client.HTTPConnection, token: str, sql: str) -> float:
    """POST a task whose sample_sql and infer_sql are `sql`; the milliseconds until its 422."""
    body = json.dumps({**SEED_README_BODY, "sample_sql": sql, "infer_sql": sql})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    start = time.perf_counter()
    conn.request("POST", "/api/workflow/tasks", body, headers)
    resp = conn.getresponse()
    reply = resp.read()
    elapsed = (time.perf_counter() - start) * 1000
    assert resp.status == 422 and b"_sql" in reply, reply[:300]
    return elapsed


def hostile_queries(server: ApiServer, requests: int) -> dict[str, Any]:
    token = server.token()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    over_budget = [post_query(conn, token, OVER_BUDGET_SQL) for _ in range(requests)]
    slow = [post_query(conn, token, SLOW_SQL) for _ in range(requests)]
    stop = threading.Event()

    def checks() -> None:
        own = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        while not stop.is_set():
            post_query(own, token, SLOW_SQL)

    checker = threading.Thread(target=checks)
    checker.start()
    try:
        time.sleep(0.5)
        during = timed_gets(server, requests, {"ours": "/api/workflow/tasks?limit=100"})["ours"]
    finally:
        stop.set()
        checker.join()
    return {
        "over_budget_422_p50_ms": round(statistics.median(over_budget), 1),
        "over_budget_422_max_ms": round(max(over_budget), 1),
        "slow_check_422_p50_ms": round(statistics.median(slow), 1),
        "slow_check_422_max_ms": round(max(slow), 1),
        "list_p50_ms_during_checks": round(statistics.median(during), 2),
        "list_p99_ms_during_checks": round(percentile(during, 99), 2),
    }


async def ws_fanout(server: ApiServer, lines: int, clients: int) -> dict[str, Any]:
    import websockets

    store = server.store
    task_id = store.create_task(
        name="ws-bench", experiment_id="e", sample_sql="SELECT 1", infer_sql="SELECT 2",
        hdfs_path="/tmp/b", hive_table="hive_db.t", server="local",
    )  # fmt: skip
    store.start_step(task_id, "data_fetch")
    url = f"ws://127.0.0.1:{server.port}/api/workflow/tasks/{task_id}/logs?token={server.token()}"
    appended: dict[str, float] = {}
    received: list[list[tuple[str, float]]] = [[] for _ in range(clients)]

    async def client(i: int, ready: asyncio.Event) -> None:
        async with websockets.connect(url, max_size=None) as ws:
            ready.set()
            async for raw in ws:
                received[i].append((json.loads(raw)["message"], time.perf_counter()))

    readies = [asyncio.Event() for _ in range(clients)]
    tasks = [asyncio.create_task(client(i, readies[i])) for i in range(clients)]
    await asyncio.gather(*(r.wait() for r in readies))
    await asyncio.sleep(0.5)
    start = time.perf_counter()

    def writer() -> None:
        for n in range(lines):
            message = f"bench line {n}"
            appended[message] = time.perf_counter()
            store.append_log(task_id, "data_fetch", "INFO", message)
        store.complete_step(task_id, "data_fetch")
        store.fail_task(task_id, "benchmark done")

    await asyncio.to_thread(writer)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    end = max((r[-1][1] for r in received if r), default=time.perf_counter())
    latencies = [(t - appended[m]) * 1000 for r in received for m, t in r if m in appended]
    delivered = sum(1 for r in received for m, _ in r if m in appended)
    return {
        "ws_p50_ms": round(percentile(latencies, 50), 2),
        "ws_p99_ms": round(percentile(latencies, 99), 2),
        "ws_lines_per_s": round(lines / (end - start), 1),
        "ws_deliveries_per_s": round(delivered / (end - start), 1),
        "ws_lost": clients * lines - delivered,
        "ws_clients": clients,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--hostile", type=int, default=20, help="POSTs of each hostile query")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench_api_"))
    # all clients are one user: lift the per-user WebSocket cap to the client count
    server = start_api_server(root, {"api": {"max_websockets_per_user": max(20, args.clients)}})
    try:
        t0 = time.monotonic()
        fill(server, args.tasks)
        print(f"filled {args.tasks} tasks and DAG runs in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        times = timed_gets(server, args.requests)
        ws = asyncio.run(ws_fanout(server, args.lines, args.clients))
        hostile = hostile_queries(server, args.hostile)
    finally:
        airflow_stack.stop(server.home)
    result = {
        "tasks": args.tasks,
        "list_p50_ms": round(statistics.median(times["ours"]), 2),
        "list_p99_ms": round(percentile(times["ours"], 99), 2),
        "airflow_list_p50_ms": round(statistics.median(times["airflow"]), 2),
        "airflow_list_p99_ms": round(percentile(times["airflow"], 99), 2),
        **ws,
        **hostile,
    }
    result["list_p99_vs_airflow"] = round(result["list_p99_ms"] / result["airflow_list_p99_ms"], 3)
    result["list_p50_during_checks_vs_idle"] = round(
        result["list_p50_ms_during_checks"] / result["list_p50_ms"], 2
    )
    print(json.dumps(result), flush=True)
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
