"""`make demo` / `make serve` / `make stop`: the whole pipeline on the embedded default.

run    start sshd ("training server"), the Spark Thrift Server (Hive) and Airflow on
       127.0.0.1, load synthetic CTR data into Hive, submit a task through the REST API with
       the seed's request body, follow its WebSocket log, print and save a summary, stop
       everything it started (also on Ctrl-C or failure).
serve  the same services and data, left running for exploring the UI and API.
stop   stop what `serve` started.

--executor celery (make ... EXECUTOR=celery) runs Airflow as a small cluster instead:
PostgreSQL (Airflow's metadata DB and the workflow store), Redis (the Celery broker) and two
Celery workers, each with its own hostname and scratch dir, all on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts import airflow_stack  # noqa: E402
from scripts.hive_server import HiveServer  # noqa: E402
from scripts.postgres_server import PostgresServer  # noqa: E402
from scripts.redis_server import RedisServer  # noqa: E402
from scripts.sshd import LocalSshd  # noqa: E402

WORK = Path(os.environ.get("FUXICTR_DEMO_DIR", REPO / ".work" / "demo"))
OUTPUT = REPO / "demo-output"
PORT = int(os.environ.get("FUXICTR_DEMO_PORT", "8001"))
SAMPLE_ROWS = int(os.environ.get("FUXICTR_DEMO_SAMPLE_ROWS", "20000"))
INFER_ROWS = int(os.environ.get("FUXICTR_DEMO_INFER_ROWS", "5000"))
HIVE_DB = "demo"
# The database of the seed README's example body (`hive_table: hive_db.output_table`): the
# embedded default creates and lists it too, so the first example a user copies is accepted.
SEED_EXAMPLE_DB = "hive_db"
EXECUTORS = ("local", "celery")
CELERY_WORKERS = 2


def quiet_client_logs() -> None:
    """The demo prints its own progress; the Hive client's per-statement INFO lines are noise."""
    import logging

    for name in ("pyhive", "airflow", "airflow.task"):
        logging.getLogger(name).setLevel(logging.WARNING)


def say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- services --


class Services:
    """Everything the demo starts, stopped in reverse order."""

    def __init__(
        self,
        work: Path,
        port: int,
        *,
        sample_rows: int = SAMPLE_ROWS,
        infer_rows: int = INFER_ROWS,
        config: dict[str, Any] | None = None,
        airflow_env: dict[str, str] | None = None,
        executor: str = "local",
        hive: HiveServer | None = None,
    ) -> None:
        """`hive`: a Hive server someone else started and stops (the test session's one JVM);
        by default the services start and stop their own."""
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
        self.work = work
        self.port = port
        self.rows = (sample_rows, infer_rows)
        self.config_overrides = config or {}
        self.extra_airflow_env = airflow_env or {}
        self.executor = executor
        self.env: dict[str, str] = {}
        self.sshd = LocalSshd(work / "sshd")
        self.owns_hive = hive is None
        self.hive = hive or HiveServer(work / "hive")
        self.postgres = PostgresServer(work / "postgres")
        self.redis = RedisServer(work / "redis")
        self.airflow_home = work / "airflow"

    def start(self) -> dict[str, str]:
        ssh = self.sshd.start()
        say(f"sshd (training server) on 127.0.0.1:{ssh.port}")
        hive = self.hive.start()
        say(f"Spark Thrift Server (HiveServer2) on 127.0.0.1:{hive.port}")
        config_layers, executor_env = self.start_executor_services()
        config = write_config(
            self.work, ssh, *config_layers, self.config_overrides, warehouse=self.hive.dir / "warehouse"
        )
        env = {
            "FUXICTR_WORKFLOW_CONFIG": str(config),
            **self.hive.airflow_env(),
            **executor_env,
            **self.extra_airflow_env,
        }
        workers = CELERY_WORKERS if self.executor == "celery" else 0
        say(
            f"starting Airflow (api-server on 127.0.0.1:{self.port}, scheduler, dag-processor, triggerer"
            + (f", {workers} Celery workers)" if workers else ")")
        )
        # the data goes into Hive while Airflow migrates and starts: neither needs the other
        with ThreadPoolExecutor(1) as pool:
            loading = pool.submit(load_demo_data, self.work, env, *self.rows)
            full_env = self.env = airflow_stack.start(self.airflow_home, self.port, env, workers=workers)
            loading.result()
        import subprocess

        # the pools while the dag-processor parses the DAG: each takes seconds of its own
        cli = str(Path(sys.executable).with_name("fuxictr-workflow"))
        pools = subprocess.Popen(
            [cli, "pools", "sync"], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        write_env_file(self.work / "env.sh", full_env)
        try:
            wait_dag(self.port, self.airflow_home)
        finally:
            output = pools.communicate(timeout=300)[0]
        if pools.returncode:
            raise subprocess.CalledProcessError(pools.returncode, pools.args, output)
        return full_env

    def start_executor_services(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """For CeleryExecutor: PostgreSQL and Redis, the config layer that puts the workflow store
        on PostgreSQL and each worker's staging and log files in its own scratch dir, and Airflow's
        settings."""
        if self.executor == "local":
            return [], {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
        pg = self.postgres.start()
        say(f"PostgreSQL on 127.0.0.1:{pg.port}")
        redis = self.redis.start()
        say(f"Redis (Celery broker) on 127.0.0.1:{redis.port}")
        config = {
            "store": {"url": self.postgres.url("workflow")},
            # each worker's own disk, as on separate hosts; the logs the API shows are in the store
            "storage": {
                "staging_dir": "${FUXICTR_WORKFLOW_HOME}/staging",
                "log_dir": "${FUXICTR_WORKFLOW_HOME}/logs/workflow",
            },
        }
        env = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url("airflow"),
            "AIRFLOW__CELERY__BROKER_URL": self.redis.url(),
            "AIRFLOW__CELERY__RESULT_BACKEND": self.postgres.url("airflow", driver="db+postgresql+psycopg2"),
        }
        return [config], env

    def heal(self) -> list[str]:
        """Bring back whatever is down or not answering (a fault test stops services, a crash
        kills one); returns the names of what was started again."""
        restarted = []
        servers: list[tuple[str, Any]] = [("sshd", self.sshd), ("hive", self.hive)]
        if self.executor == "celery":
            servers += [("postgres", self.postgres), ("redis", self.redis)]
        for name, server in servers:
            if not server.serving():
                server.stop()
                server.start()
                restarted.append(name)
        return restarted + airflow_stack.ensure(self.airflow_home, self.port, self.env)

    def stop(self) -> None:
        """Everything that may run, whichever executor started it (`make stop` knows neither)."""
        airflow_stack.stop(self.airflow_home)
        self.redis.stop()
        self.postgres.stop()
        self.postgres.remove_data()
        if self.owns_hive:
            self.hive.stop()
        self.sshd.stop()


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """`source` it to use the airflow CLI against this stack (e.g. `airflow tasks test`)."""
    import shlex

    keep = ("AIRFLOW_HOME", "AIRFLOW__", "AIRFLOW_CONN_", "FUXICTR_WORKFLOW_", "SPARK_HOME", "PATH")
    lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items()) if k.startswith(keep)]
    path.write_text("\n".join(lines) + "\n")


def merged(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """`base` with `layer`'s keys set, mappings merged key by key (a server's settings too)."""
    out = dict(base)
    for key, value in layer.items():
        out[key] = (
            merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def write_config(work: Path, ssh: Any, *overrides: dict[str, Any], warehouse: Path | None = None) -> Path:
    """The demo's config.yaml with each override layer merged in, in order."""
    data: dict[str, Any] = {
        "servers": {
            "local": {
                "host": ssh.host,
                "port": ssh.port,
                "username": ssh.username,
                "key_path": ssh.key_path,
                "known_hosts": ssh.known_hosts,
                "remote_root": str(work / "server"),
                "python": str(Path(sys.executable)),
                "max_concurrent_trainings": 1,
            }
        },
        "storage": {
            "staging_dir": str(work / "staging"),
            "log_dir": str(work / "logs" / "workflow"),
        },
        "transfer": {"chunk_size": 4 * 1024 * 1024, "parallel_workers": 2},
        "task": {"heartbeat_interval": 5, "retry_delay_s": 3},
        # the embedded server is the Spark Thrift Server; the demo writes into its own databases only
        "hive": {
            "output_databases": [HIVE_DB, SEED_EXAMPLE_DB],
            "warehouse_dir": str(warehouse or work / "hive" / "warehouse"),
            "sql_dialect": "spark",
        },
        "store": {"url": f"sqlite:///{work / 'workflow.db'}"},
    }
    for layer in overrides:
        data = merged(data, layer)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def load_demo_data(work: Path, env: dict[str, str], sample_rows: int, infer_rows: int) -> None:
    """Synthetic CTR data with a learnable signal → Parquet → Hive tables (through HS2)."""
    import pyarrow as pa

    from fuxictr_workflow.demo.synthetic import make_ctr_table, write_parquet_parts

    source = work / "source"
    for name, rows, seed, labelled, dt in (
        ("sample", sample_rows, 1, True, "2024-01-01"),
        ("infer", infer_rows, 2, False, "2024-01-02"),
    ):
        table = make_ctr_table(rows, seed=seed, with_label=labelled)
        table = table.append_column("dt", pa.array([dt] * table.num_rows))
        write_parquet_parts(table, source / name)
    statements = [f"CREATE DATABASE IF NOT EXISTS {db}" for db in (HIVE_DB, SEED_EXAMPLE_DB)]
    for name in ("sample", "infer"):
        statements += [
            f"DROP TABLE IF EXISTS {HIVE_DB}.ctr_{name}",
            f"CREATE TABLE {HIVE_DB}.ctr_{name} USING parquet LOCATION 'file://{source / name}'",
        ]
    hive_run(statements, env)
    say(f"loaded {sample_rows} sample rows and {infer_rows} inference rows into Hive tables {HIVE_DB}.ctr_*")


def hive_run(statements: list[str], env: dict[str, str]) -> list[Any]:
    """Run statements through HiveServer2 (the Airflow connection the stages use)."""
    # only `env`'s keys change and are put back: another thread of this process may read
    # os.environ meanwhile (Services.start loads the data while Airflow starts)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    quiet_client_logs()
    try:
        from airflow.providers.apache.hive.hooks.hive import HiveServer2Hook

        hook = HiveServer2Hook()
        results: list[Any] = []
        for sql in statements:
            results.append(
                hook.get_records(sql)
                if sql.lstrip().upper().startswith(("SELECT", "SHOW"))
                else hook.run(sql)
            )
        return results
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def wait_dag(port: int, home: Path, timeout: float = 180) -> None:
    token = get_token(port, home)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            api(port, token, "GET", "/api/v2/dags/fuxictr_workflow")
            return
        except urllib.error.HTTPError:
            time.sleep(1)
    raise RuntimeError("the DAG fuxictr_workflow was not parsed within 180s (see .work/demo/airflow/logs)")


# -- API client --


def get_token(port: int, home: Path) -> str:
    body = {"username": airflow_stack.ADMIN, "password": airflow_stack.admin_password(home)}
    return api(port, None, "POST", "/auth/token", body)["access_token"]


def api(
    port: int,
    token: str | None,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    timeout: float = 30,
) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data, headers, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


async def follow_logs(port: int, token: str, task_id: int) -> int:
    """Print the task's log events until the socket closes after the final state.

    Reconnects after a dropped socket, resuming after the events already printed."""
    import websockets

    seen = 0
    url = f"ws://127.0.0.1:{port}/api/workflow/tasks/{task_id}/logs?token={token}"
    while True:
        try:
            async with websockets.connect(f"{url}&after={seen}", max_size=None) as ws:
                async for raw in ws:
                    event = json.loads(raw)
                    seen += 1
                    print_event(event)
                return seen
        except (OSError, websockets.ConnectionClosedError) as err:
            say(f"log stream dropped ({err}); reconnecting")
            await asyncio.sleep(1)


def print_event(event: dict[str, Any]) -> None:
    msg = event["message"]
    step = event.get("step") or "-"
    marker = {"ERROR": "!!", "WARNING": "! "}.get(event["level"], "  ")
    if msg.endswith(" started") or " finished in " in msg or " failed: " in msg:
        print(f"== {event['timestamp']} {step:>16} | {msg}", flush=True)
    else:
        print(f"{marker} {event['timestamp']} {step:>16} | {msg}", flush=True)


# -- summary --


def summarize(
    task: dict[str, Any], hive_rows: int | None, started: float, pipeline_s: float
) -> dict[str, Any]:
    steps = {s["step_name"]: s for s in task["steps"]}
    results = {name: (s.get("result") or {}) for name, s in steps.items()}
    train = results.get("train", {})
    moved = {
        name: {"bytes": results[name].get("bytes"), "mb_per_s": results[name].get("mb_per_s")}
        for name in ("data_upload", "result_download")
    }
    return {
        "task_id": task["id"],
        "status": task["status"],
        "stages": {name: s["status"] for name, s in steps.items()},
        "stage_seconds": {name: results[name].get("seconds") for name in steps},
        "transfers": moved,
        "auc": train.get("auc"),
        "logloss": train.get("logloss"),
        "epochs": task["epochs"],  # GET /tasks/{id}'s: the train step's, in order
        "quality_gate": gate_summary(task.get("quality_gate")),
        "infer_rows": results.get("infer", {}).get("rows"),
        "hive_rows": hive_rows,
        "pipeline_s": round(pipeline_s, 1),
        "services_and_pipeline_s": round(time.monotonic() - started, 1),
        "make_total_s": make_total_s(),
    }


def gate_summary(gate: dict[str, Any] | None) -> dict[str, Any] | None:
    """The gate's decision with both models' figures (None: the gate was off)."""
    keys = ("decision", "auc", "baseline_auc", "logloss", "baseline_logloss")
    return {k: gate[k] for k in keys} if gate else None


def make_total_s() -> float | None:
    """Seconds since `make demo` started (set-up included), when make told us (FXW_MAKE_STARTED)."""
    try:
        return round(time.time() - float(os.environ["FXW_MAKE_STARTED"]), 1)
    except (KeyError, ValueError):
        return None


def print_summary(summary: dict[str, Any], task: dict[str, Any], port: int, home: Path) -> None:
    print("\n" + "=" * 72)
    print(f"FuXiCTR workflow demo — task {summary['task_id']}: {summary['status'].upper()}")
    print("-" * 72)
    for step in task["steps"]:
        secs = summary["stage_seconds"].get(step["step_name"])
        extra = ""
        if step["step_name"] in summary["transfers"]:
            t = summary["transfers"][step["step_name"]]
            if t["bytes"] is not None:
                extra = f"  {t['bytes'] / 1e6:,.1f} MB at {t['mb_per_s'] or 0:,.1f} MB/s"
        err = f"  ERROR: {step['error_message']}" if step.get("error_message") else ""
        print(
            f"  {step['step_name']:<16} {step['status']:<10} {secs if secs is not None else '-':>8}s{extra}{err}"
        )
    print("-" * 72)
    print(f"  AUC {summary['auc']}   logloss {summary['logloss']}")
    for e in summary["epochs"]:
        print(f"    epoch {e['epoch']}: train loss {e['train_loss']}, AUC {e['auc']}, logloss {e['logloss']}")
    gate = summary["quality_gate"]
    if gate:
        print(
            f"  quality gate: {gate['decision']} (AUC {gate['auc']} vs published {gate['baseline_auc']}, "
            f"logloss {gate['logloss']} vs {gate['baseline_logloss']})"
        )
    print(f"  predictions: {summary['infer_rows']} rows scored, {summary['hive_rows']} rows in Hive")
    total = summary["make_total_s"]
    print(
        f"  pipeline {summary['pipeline_s']}s, services + pipeline {summary['services_and_pipeline_s']}s"
        + (f", make demo {total}s (set-up included)" if total is not None else "")
    )
    print("  the services stop now; `make serve` starts them again with this run's task, then:")
    print(f"  UI:  http://127.0.0.1:{port}/  (the 'FuXiCTR Workflow' entry in the nav)")
    print(f"  API: http://127.0.0.1:{port}/api/workflow/tasks   docs: /api/workflow/docs")
    print(f"  admin password: {airflow_stack.passwords_file(home)}")
    print(f"  summary JSON: {OUTPUT / 'summary.json'}   logs: {WORK / 'logs' / 'workflow'}")
    print("=" * 72)


# -- commands --

SEED_BODY = {
    "name": "demo_task",
    "experiment_id": "DeepFM_demo",
    "sample_sql": f"SELECT * FROM {HIVE_DB}.ctr_sample WHERE dt = '2024-01-01'",
    "infer_sql": f"SELECT * FROM {HIVE_DB}.ctr_infer WHERE dt = '2024-01-02'",
    "hdfs_path": str(WORK / "hdfs"),
    "hive_table": f"{HIVE_DB}.ctr_predictions",
}


def run(executor: str) -> int:
    started = time.monotonic()
    # the demo runs with the quality gate on: its summary shows the gate's decision (the first
    # run has no published model to compare with; a later one compares with the one before)
    services = Services(WORK, PORT, executor=executor, config={"quality_gate": {"enabled": True}})

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        env = services.start()
        token = get_token(PORT, services.airflow_home)
        body = dict(SEED_BODY)
        created = api(PORT, token, "POST", "/api/workflow/tasks", body)
        task_id = created["task_id"]
        say(f"created task {task_id} ({created['status']}) via POST /api/workflow/tasks; following its log")
        t0 = time.monotonic()
        asyncio.run(follow_logs(PORT, token, task_id))
        pipeline_s = time.monotonic() - t0
        task = api(PORT, token, "GET", f"/api/workflow/tasks/{task_id}")
        hive_rows = None
        if task["status"] == "completed":
            (rows,) = hive_run(
                [f"SELECT count(*) FROM {SEED_BODY['hive_table']} WHERE task_id = {int(task_id)}"],
                {k: v for k, v in env.items() if k.startswith("AIRFLOW_CONN_")},
            )
            hive_rows = int(rows[0][0])
        summary = summarize(task, hive_rows, started, pipeline_s)
        OUTPUT.mkdir(exist_ok=True)
        (OUTPUT / "summary.json").write_text(json.dumps(summary, indent=2))
        print_summary(summary, task, PORT, services.airflow_home)
        return 0 if task["status"] == "completed" and hive_rows == summary["infer_rows"] else 1
    except KeyboardInterrupt:
        say("interrupted; stopping everything")
        return 130
    finally:
        services.stop()
        say("stopped sshd, Hive and Airflow" + (", PostgreSQL and Redis" if executor == "celery" else ""))


def serve(executor: str) -> int:
    services = Services(WORK, PORT, executor=executor)
    try:
        services.start()
    except BaseException:
        services.stop()
        raise
    print(
        f"Airflow UI and API on http://127.0.0.1:{PORT}/ (user admin, password in "
        f"{airflow_stack.passwords_file(services.airflow_home)}); `make stop` stops everything."
    )
    print(f"Example request body: {json.dumps(SEED_BODY)}")
    return 0


def stop(executor: str) -> int:
    Services(WORK, PORT, executor=executor).stop()
    say("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["run", "serve", "stop"])
    parser.add_argument("--executor", choices=EXECUTORS, default="local")
    args = parser.parse_args(argv)
    return {"run": run, "serve": serve, "stop": stop}[args.command](args.executor)


if __name__ == "__main__":
    sys.exit(main())
