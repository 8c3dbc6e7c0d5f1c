"""Airflow's public REST API, called as the caller of a workflow route.

What the plugin does to Airflow's runs (trigger, fail, clear, mark, answer a gate) goes to
Airflow's own ``/api/v2`` routes on the API server that took the caller's request, with the
caller's credentials (their bearer token or UI cookie; the Referer too, so a run started from
the UI is recorded as the UI's). Airflow then does what it does for a request sent to it
directly: checks the caller's permission, records who did it (a run's triggering user, a
gate's responder) and writes its audit log. Calling the route functions in-process would skip
all three and tie the plugin to their private signatures.
"""

from __future__ import annotations

import contextlib
import threading
from functools import cache
from typing import Any
from urllib.parse import quote

import httpx
from starlette.requests import HTTPConnection
from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_fixed

from fuxictr_workflow.api import URL_PREFIX

TIMEOUT_S = 60.0
# Airflow on SQLite (the embedded stack) can answer a write with a 500 having done nothing: its
# audit-log dependency, which commits on the server's event loop, gave up on SQLite's lock held
# by a request that needs that loop to commit (scripts/sqlite_connect.py). Such a call is sent
# again; a failed SQLite commit rolls back, so a retried trigger cannot meet a run of its own.
SQLITE_ATTEMPTS = 3
RETRY_PAUSE_S = 1.0

# One call at a time from this process when Airflow's metadata DB is SQLite. Airflow's audit
# log dependency writes to the DB on the API server's event loop: with a second write request
# in the same server holding SQLite's lock until the loop runs its commit, the loop waits on
# the lock and the lock on the loop (found with two concurrent task creates: both stalled
# until SQLite's busy timeout, then 500). Requests sent to Airflow directly meet the same.
_SQLITE_SERIAL = threading.Lock()


@cache
def _metadata_db_is_sqlite() -> bool:
    from airflow.configuration import conf

    return conf.get("database", "sql_alchemy_conn").startswith("sqlite")


class AirflowRefused(RuntimeError):
    """Airflow answered with an error; `status_code` and `detail` are its."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"Airflow answered {status_code}: {detail}")
        self.status_code, self.detail = status_code, detail


def _root(conn: HTTPConnection) -> str:
    """This API server as its socket listens (not whatever host a proxy put in front of it),
    with the base path Airflow is served under."""
    host, port = conn.scope["server"]
    base = conn.scope.get("root_path", "").removesuffix(URL_PREFIX)
    return f"http://{host}:{port}{base}"


def _caller_headers(conn: HTTPConnection) -> dict[str, str]:
    headers: dict[str, str] = {}
    if "authorization" in conn.headers:
        headers["Authorization"] = conn.headers["authorization"]
    elif token := conn.cookies.get("_token"):
        headers["Cookie"] = f"_token={token}"
    if "referer" in conn.headers:
        headers["Referer"] = conn.headers["referer"]
    return headers


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        return resp.text
    return detail if isinstance(detail, str) else str(detail)


def dag_path(dag_id: str) -> str:
    return f"/api/v2/dags/{quote(dag_id, safe='')}"


def run_path(dag_id: str, run_id: str) -> str:
    return f"{dag_path(dag_id)}/dagRuns/{quote(run_id, safe='')}"


class AirflowApi:
    """Airflow's REST API on this server, as the caller of `conn` (a request to the plugin).

    One HTTP client (and connection) for all the calls of one route; close it, or use the
    object as a context manager."""

    def __init__(self, conn: HTTPConnection, timeout: float = TIMEOUT_S) -> None:
        self._client = httpx.Client(base_url=_root(conn), headers=_caller_headers(conn), timeout=timeout)

    def __enter__(self) -> AirflowApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def send(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Airflow's JSON answer; AirflowRefused when it answers with an error, or not at all."""
        sqlite = _metadata_db_is_sqlite()
        answered = Retrying(
            stop=stop_after_attempt(SQLITE_ATTEMPTS if sqlite else 1),
            wait=wait_fixed(RETRY_PAUSE_S),
            retry=retry_if_result(lambda resp: resp.status_code >= 500),
            retry_error_callback=lambda state: state.outcome.result(),  # the last answer
        )
        resp = answered(self._request, sqlite, method, path, body)
        if resp.status_code >= 400:
            raise AirflowRefused(resp.status_code, _detail(resp))
        return resp.json() if resp.content else {}

    def _request(self, sqlite: bool, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        with _SQLITE_SERIAL if sqlite else contextlib.nullcontext():
            try:
                return self._client.request(method, path, json=body)
            except httpx.TransportError as err:
                raise AirflowRefused(503, f"Airflow did not answer: {type(err).__name__}: {err}") from err

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self.send("GET", dag_path(dag_id))

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.send("GET", run_path(dag_id, run_id))["state"])

    def task_instance_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """The run's unmapped task instances: task id -> state."""
        listed = self.send("GET", f"{run_path(dag_id, run_id)}/taskInstances?limit=1000")
        return {ti["task_id"]: ti["state"] for ti in listed.get("task_instances", []) if ti["map_index"] < 0}

    def trigger_run(
        self, dag_id: str, run_id: str, conf: dict[str, Any], logical_date: str
    ) -> dict[str, Any]:
        body = {"dag_run_id": run_id, "conf": conf, "logical_date": logical_date}
        return self.send("POST", f"{dag_path(dag_id)}/dagRuns", body)

    def fail_run(self, dag_id: str, run_id: str) -> None:
        """Running task instances fail, unfinished ones are skipped, the run fails."""
        self.send("PATCH", run_path(dag_id, run_id), {"state": "failed"})

    def mark_succeeded(self, dag_id: str, run_id: str, task_id: str) -> None:
        self.send(
            "PATCH",
            f"{run_path(dag_id, run_id)}/taskInstances/{quote(task_id, safe='')}",
            {"new_state": "success"},
        )

    def clear(self, dag_id: str, run_id: str, task_ids: list[str]) -> int:
        """The task instances cleared and their run re-queued; how many were cleared."""
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": task_ids,
            "only_failed": False,
            "reset_dag_runs": True,
        }
        answer = self.send("POST", f"{dag_path(dag_id)}/clearTaskInstances", body)
        return int(answer.get("total_entries", len(answer.get("task_instances", []))))

    def answer_hitl(self, answer: dict[str, Any], chosen: str) -> dict[str, Any]:
        """A human-in-the-loop task instance answered with one option."""
        path = (
            f"{run_path(answer['dag_id'], answer['dag_run_id'])}"
            f"/taskInstances/{quote(answer['task_id'], safe='')}/{answer['map_index']}/hitlDetails"
        )
        return self.send("PATCH", path, {"chosen_options": [chosen], "params_input": {}})
