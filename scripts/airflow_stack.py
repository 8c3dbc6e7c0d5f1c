"""Airflow's own processes, on 127.0.0.1, under a home of ours.

api-server (serving the UI, Airflow's API, the execution API and our plugin's API),
scheduler, dag-processor and triggerer (it follows the deferred training and inference
jobs), plus, with `workers` > 0 (CeleryExecutor), that many `airflow celery worker`s, each
with its own hostname (scripts/stack_hostname.py) and its own scratch dir
(FUXICTR_WORKFLOW_HOME). Each process has a pid file so `stop` ends exactly what `start`
began. Used by `make demo`/`make serve`/`make stop` and the end-to-end tests.

No process serves logs over the network (`--skip-serve-logs`): Airflow's log server binds all
interfaces and has no address option, and every process here writes the one log folder that
the api-server reads.

    python scripts/airflow_stack.py start --home DIR [--port 8001] [--env-file FILE] [--workers N]
    python scripts/airflow_stack.py stop --home DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

if not __package__:  # run as a script: make `scripts` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts import processes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")
SQLITE_CONNECT_ARGS_KEYS = ("SQL_ALCHEMY_CONNECT_ARGS", "SQL_ALCHEMY_CONNECT_ARGS_ASYNC")
SKIP_SERVE_LOGS = ("scheduler", "triggerer")
WORKER_PREFIX = "worker-"
WORKER_CONCURRENCY = 2
ADMIN = "admin"


def worker_names(count: int) -> tuple[str, ...]:
    return tuple(f"{WORKER_PREFIX}{i}" for i in range(1, count + 1))


def is_worker(name: str) -> bool:
    return name.startswith(WORKER_PREFIX)


def worker_home(home: Path, name: str) -> Path:
    """A worker's own scratch space (its storage.staging_dir lives under it)."""
    return home / "workers" / name


def command(name: str) -> list[str]:
    airflow = str(VENV_BIN / "airflow")
    if is_worker(name):
        return [
            airflow, "celery", "worker", "--celery-hostname", f"{name}@%h",
            "--concurrency", str(WORKER_CONCURRENCY), "--skip-serve-logs",
        ]  # fmt: skip
    return [airflow, name, *(["--skip-serve-logs"] if name in SKIP_SERVE_LOGS else [])]


def process_env(home: Path, name: str, env: dict[str, str]) -> dict[str, str]:
    if name == "api-server" and env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"):
        # a shorter SQLite busy timeout for the server whose event loop can deadlock on it
        return {
            **env,
            **{
                f"AIRFLOW__DATABASE__{key}": "scripts.sqlite_connect.API_SERVER_CONNECT_ARGS"
                for key in SQLITE_CONNECT_ARGS_KEYS
            },
        }
    if not is_worker(name):
        return env
    scratch = worker_home(home, name)
    scratch.mkdir(parents=True, exist_ok=True)
    return {
        **env,
        "FUXICTR_WORKFLOW_HOME": str(scratch),
        "FXW_WORKER_HOSTNAME": name,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "scripts.stack_hostname.hostname",
    }


def airflow_env(home: Path, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every Airflow process (and `airflow` CLI call) of this stack uses."""
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.update(extra or {})
    # Airflow imports scripts.stack_hostname and scripts.sqlite_connect by name
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    if env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite").startswith("sqlite"):
        for key in SQLITE_CONNECT_ARGS_KEYS:
            env[f"AIRFLOW__DATABASE__{key}"] = "scripts.sqlite_connect.CONNECT_ARGS"
    if VENV_BIN.as_posix() not in env["PATH"].split(os.pathsep):  # an extra PATH must not hide airflow
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    return env


def passwords_file(home: Path) -> Path:
    return home / "simple_auth_manager_passwords.json.generated"


def admin_password(home: Path) -> str:
    return json.loads(passwords_file(home).read_text())[ADMIN]


def _pid_file(home: Path, name: str) -> Path:
    return home / "pids" / f"{name}.json"


def _process(home: Path, name: str) -> processes.ProcessRef | None:
    f = _pid_file(home, name)
    return processes.ProcessRef(**json.loads(f.read_text())) if f.exists() else None


def _names_file(home: Path) -> Path:
    return home / "pids" / "processes.json"


def names(home: Path) -> tuple[str, ...]:
    """The processes this stack was started with."""
    f = _names_file(home)
    return tuple(json.loads(f.read_text())) if f.exists() else PROCESSES


def running(home: Path) -> dict[str, int]:
    """The stack's processes that run now, by name: pid."""
    out = {}
    for name in names(home):
        process = _process(home, name)
        if process is not None and process.running():
            out[name] = process.pid
    return out


def ensure(home: Path, port: int, env: dict[str, str]) -> list[str]:
    """Start whichever of the stack's processes is not running (after a crash or a fault test)
    and wait for the API; returns the names started."""
    started = [name for name in names(home) if name not in running(home)]
    for name in started:
        start_one(home, name, env)
    wait_healthy(port)
    return started


def wait_healthy(port: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/api/v2/monitor/health"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the Airflow API server did not answer on {url} within {timeout:.0f}s")


def start(
    home: Path,
    port: int,
    extra_env: dict[str, str] | None = None,
    processes: tuple[str, ...] = PROCESSES,
    workers: int = 0,
) -> dict[str, str]:
    """Migrate the metadata DB, start the processes (and `workers` Celery workers), wait for
    the API; returns the env used."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "pids").mkdir(exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    env = airflow_env(home, port, extra_env)
    subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    processes = (*processes, *worker_names(workers))
    _names_file(home).write_text(json.dumps(processes))
    for name in processes:
        start_one(home, name, env)
    if "api-server" in processes:
        wait_healthy(port)
    return env


def start_one(home: Path, name: str, env: dict[str, str]) -> int:
    """Start `name` unless it runs already; returns its pid."""
    current = _process(home, name)
    if current is not None and current.running():
        return current.pid
    stop_one(home, name)  # a process that exited may leave its group or a zombie behind
    log = open(home / "logs" / f"{name}.out", "ab")  # noqa: SIM115 - owned by the daemon
    proc = subprocess.Popen(
        command(name),
        env=process_env(home, name, env),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: stop() ends its workers too
    )
    process = processes.ProcessRef.of(proc.pid)
    _pid_file(home, name).write_text(json.dumps(dataclasses.asdict(process)))
    if name not in names(home):  # started on its own (an API server for tests): `stop` stops it too
        _names_file(home).write_text(json.dumps([*names(home), name]))
    return proc.pid


def stop_one(home: Path, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    process = _process(home, name)
    if process is None:
        return
    process.stop(sig, timeout)
    _pid_file(home, name).unlink(missing_ok=True)


def stop(home: Path) -> None:
    for name in reversed(names(home)):
        stop_one(home, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--env-file", type=Path, help="JSON object of extra environment variables")
    parser.add_argument("--workers", type=int, default=0, help="Celery workers (CeleryExecutor in the env)")
    args = parser.parse_args(argv)
    home = args.home.resolve()
    if args.action == "start":
        extra = json.loads(args.env_file.read_text()) if args.env_file else None
        start(home, args.port, extra, workers=args.workers)
        print(f"Airflow on http://127.0.0.1:{args.port} (admin password in {passwords_file(home)})")
    elif args.action == "stop":
        stop(home)
    else:
        procs = running(home)
        print(json.dumps(procs))
        return 0 if procs else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
