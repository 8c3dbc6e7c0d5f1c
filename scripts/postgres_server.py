"""A private PostgreSQL server on 127.0.0.1 (Debian's postgresql package): the Airflow
metadata DB and the workflow store of the Celery stack, and the store tests' server.

    python scripts/postgres_server.py start --dir DIR [--port N]
    python scripts/postgres_server.py stop --dir DIR

PostgreSQL refuses to run as root: as root it runs as the package's `postgres` user, with its
data dir outside DIR (a test's tmp dir is not readable by other users).
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make `scripts` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts import service_cli  # noqa: E402
from scripts.daemon import Daemon  # noqa: E402

DATABASES = ("airflow", "workflow")


def bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found: install Debian's postgresql package (make deps)"
        )
    return Path(found[-1]).parent


class PostgresServer(Daemon):
    name = "PostgreSQL"
    stop_signal = signal.SIGINT  # "fast shutdown": ends the sessions, then the server

    def __init__(self, directory: str | os.PathLike[str], port: int | None = None) -> None:
        super().__init__(directory, port)
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self.user is None:
            self.root = self.dir / "pg"
        else:
            digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:12]
            self.root = Path(tempfile.gettempdir()) / f"fxw_pg_{digest}"

    def prepare(self, port: int) -> None:
        if (self.root / "data" / "PG_VERSION").exists():
            return
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, mode=0o700)
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        subprocess.run(
            [str(bin_dir() / "initdb"), "-D", str(self.root / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True, capture_output=True, **self.popen_kwargs(),
        )  # fmt: skip

    def command(self, port: int) -> list[str]:
        return [
            str(bin_dir() / "postgres"), "-D", str(self.root / "data"), "-p", str(port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
            "-c", "fsync=off", "-c", "max_connections=200",
        ]  # fmt: skip

    def popen_kwargs(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": [], "cwd": self.root}

    def answers(self, port: int) -> bool:
        import psycopg2

        try:
            psycopg2.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=3
            ).close()
        except psycopg2.OperationalError:
            return False
        return True

    def start(self, timeout: float = 120.0) -> Any:
        info = super().start(timeout)
        self.create_databases(info.port)
        return info

    def create_databases(self, port: int) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in DATABASES:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        info = self.running() or self.read_info()
        assert info is not None, "start PostgreSQL first"
        return f"{driver}://postgres@127.0.0.1:{info.port}/{database}"

    def remove_data(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    return service_cli.run(argv, __doc__, PostgresServer)


if __name__ == "__main__":
    sys.exit(main())
